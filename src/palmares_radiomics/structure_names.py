"""Is a structure name (RTSTRUCT ROIName, DICOM-SEG SegmentLabel) made only of clinical words?

ROI names and segment labels are free text: most are 'GTV_Mass', 'Spinal-Cord', 'Lung-Left' or
'Neoplasm, Secondary', but a reader may also type 'Rossi lesion' or a record number. De-identification
keeps a name that :func:`is_structure_name` recognises (or that the lesion table declares) and blanks
the others. Recognised means: at most 64 characters (the LO limit), and every alphabetic token is a
word of :data:`VOCABULARY` -- anatomy, laterality, radiotherapy and oncology words from the AAPM TG-263
structure-name components and common clinical usage. No word in the vocabulary is also a common
given or family name, so a person's name is never recognised; digits and punctuation carry no
letters and are allowed ('GTV_1', 'LN 4R' -> tokens 'gtv', 'ln', 'r').
"""

from __future__ import annotations

import re

#: Longest recognised name (the LO value representation of ROIName and SegmentLabel).
MAX_LENGTH = 64

_WORDS = """
    l r lt rt left right bilat bilateral both contra contralateral ipsi ipsilateral
    ant anterior post posterior sup superior inf inferior med medial lat lateral prox proximal dist distal
    upper lower mid middle central peripheral inner outer deep superficial total whole partial
    body external ext skin outline contour patient couch table
    spinal spine cord canal cauda equina thecal sac spinalcord spinalcanal
    brain brainstem cerebrum cerebellum cerebral hippocampus hippocampi temporal frontal parietal occipital lobe
    chiasm optic nerve nerves eye eyes globe lens retina cochlea pituitary hypothalamus
    parotid parotids submandibular gland glands salivary thyroid larynx glottis pharynx oral cavity
    lip lips tongue mandible maxilla oesophagus esophagus trachea bronchus bronchi bronchial carina
    lung lungs pulmonary heart cardiac pericardium atrium ventricle valve aorta aortic vessel vessels
    great vena cava ivc svc artery arteries vein veins pulmonary coronary lad
    chest wall thorax thoracic mediastinum mediastinal pleura pleural diaphragm hilum hilar
    breast breasts nipple implant axilla axillary supraclavicular infraclavicular imn internal mammary
    sternum rib ribs clavicle scapula humerus humeral head femur femoral neck pelvis pelvic sacrum coccyx
    vertebra vertebrae vertebral bone bones marrow skull iliac ilium ischium pubis acetabulum
    cervical lumbar sacral c t s
    liver hepatic kidney kidneys renal adrenal spleen splenic pancreas pancreatic stomach gastric
    duodenum jejunum ileum bowel small large colon colonic sigmoid rectum rectal anal anus
    bladder urinary ureter ureters urethra prostate seminal vesicles uterus cervix ovary ovaries vagina vulva
    testis testes penile bulb gallbladder biliary peritoneum peritoneal retroperitoneum abdomen abdominal
    omentum mesentery muscle muscles psoas soft tissue tissues fat subcutaneous
    lymph node nodes nodal ln lns lymphatic level levels station
    gtv ctv ptv itv igtv itvs gtvs ctvs ptvs gtvp gtvn ctvp ctvn ptvp ptvn hrctv irctv
    roi rois voi vois oar oars prv prvs avoid avoidance ring shell opt optimisation optimization
    boost dose high low intermediate risk eval evaluation expansion exp margin crop
    mass masses tumor tumour tumors tumours lesion lesions met mets metastasis metastases metastatic
    neoplasm neoplasms neoplastic secondary primary nodule nodules target targets residual recurrence
    edema oedema necrosis necrotic cyst cystic effusion ascites infiltration invasion involvement
    cancer carcinoma malignant malignancy benign suspicious enhancing nonenhancing enhancement
    hot spot hotspot uptake active avid fdg pet ct mr mri suv metabolic volume region area zone
    cavity surgical bed resection postop preop tumourbed tumorbed scar seroma clips clip marker
    other unknown unspecified organ organs structure segment segmentation
"""

#: Recognised words, lower case.
VOCABULARY: frozenset[str] = frozenset(_WORDS.split())

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
#: Numbers that may identify: a run of 3+ digits (record numbers, years) or anything date-like (15/03/2024,
#: 2024-03-15, 15.03.24). Lesion ordinals (GTV-1, L12, Met 2) stay.
_IDENTIFYING_NUMBER = re.compile(r"\d{3,}|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")


def tokens(name: str) -> list[str]:
    """Alphabetic tokens of ``name``, lower case: split on non-letters and on lower->Upper boundaries."""
    return [t.lower() for part in _NON_LETTERS.split(name) for t in _CAMEL.split(part) if t]


def is_structure_name(name: str) -> bool:
    """True when ``name`` has at most :data:`MAX_LENGTH` characters and every alphabetic token is a clinical word.

    A name without any letter ('1', '') is not recognised: it names nothing, so there is nothing to keep.
    """
    if len(name) > MAX_LENGTH or _IDENTIFYING_NUMBER.search(name):
        return False
    words = tokens(name)
    return bool(words) and all(w in VOCABULARY for w in words)
