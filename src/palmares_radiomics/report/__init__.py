"""The QC report (:mod:`.pages`: a cohort page, one page per site and 50 patients, every lesion's pictures and a
rating widget whose ratings feed back into the tables) and the provenance record (:mod:`.provenance`)."""

from ..files import sha256_file
from .pages import render_report
from .provenance import harmonisation_record, input_hashes, package_versions, write_provenance

__all__ = ["harmonisation_record", "input_hashes", "package_versions", "render_report", "sha256_file",
           "write_provenance"]
