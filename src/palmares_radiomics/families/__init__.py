"""IBSI 1 features that pyradiomics does not compute, one module per family (formulas and IBSI codes in docstrings).

Each module gives pyradiomics-style feature classes (``get<Feature>FeatureValue`` methods, discovered by
pyradiomics' ``getFeatureNames``), so the parameter file's ``featureClass`` selects them exactly as it selects
pyradiomics' own features, and ``ibsi.feature_class`` builds every class the same way:

- :data:`EXTENSIONS`: mixins that add the missing IBSI features to a pyradiomics class (``shape``: the rest of
  morphology; ``firstorder``: three intensity statistics; ``glcm``: sum variance, dissimilarity; ``gldm``: three
  NGLDM features);
- :data:`CLASSES`: whole families pyradiomics lacks (intensity histogram, intensity-volume histogram, local
  intensity, GLDZM).

Inputs beyond pyradiomics' (image, mask) pair come from ``features.compute_features`` (``_ClassInputs``):
``ibsi_binning`` in the settings (the ROI's resolved discretisation, every class), ``ibsi_intensity_mask``
(shape: the re-segmented mask on the shape class's grid) and ``ibsi_ivh_binning`` (ivh: its own
discretisation, ``palmares.ivh``); gldzm gets a mask coded 1 = intensity mask (the zones), 2 = morphological
voxel removed by re-segmentation (the distance map uses both); localintensity gets the whole lesion
neighbourhood, since its sphere reaches outside the ROI.
"""

from __future__ import annotations

from .gldzm import GreyLevelDistanceZoneMatrix
from .histogram import IntensityHistogram
from .ivh import IntensityVolumeHistogram
from .local_intensity import LocalIntensity
from .morphology import MorphologyExtras
from .ngldm import NgldmExtras
from .glcm import GlcmExtras
from .statistics import StatisticsExtras

#: pyradiomics feature class → mixin with the IBSI features of that family pyradiomics lacks (or deprecates).
EXTENSIONS: dict[str, type] = {"shape": MorphologyExtras, "firstorder": StatisticsExtras, "glcm": GlcmExtras,
                               "gldm": NgldmExtras}
#: Feature classes of the pipeline's own, by ``featureClass`` name.
CLASSES: dict[str, type] = {"histogram": IntensityHistogram, "ivh": IntensityVolumeHistogram,
                            "localintensity": LocalIntensity, "gldzm": GreyLevelDistanceZoneMatrix}
