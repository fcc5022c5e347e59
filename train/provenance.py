"""Where trained weights come from: the source datasets of the cases they saw, and their terms.

The terms are summarised from ``../shared/data/SOURCES.md`` (the full provenance lives there);
every trained model's card names the sources it was trained on with these terms, so the
manifest says, per model, which research-licence data went into it.
"""

from __future__ import annotations

from collections import Counter

from app.routing import source_tag

# Source tag (third token of a case name) -> terms of use of the underlying data.
SOURCE_TERMS: dict[str, str] = {
    "SAMMed2DdemoAMOS": "AMOS 2022, CC BY 4.0",
    "SAMMed2DdemoTotalSegmentator": "TotalSegmentator, CC BY 4.0",
    "BraTS2021": "BraTS 2021 data terms (not verified)",
    "pyradiomics": "pyradiomics test data, BSD-3-Clause repo (upstream TCIA, not verified)",
    "HC18": "HC18, CC BY 4.0",
    "HAM10000": "HAM10000, CC BY-NC-SA 4.0 (non-commercial)",
    "KvasirSEG": "Kvasir-SEG, research and education only (non-commercial)",
    "DRIVE": "DRIVE, research use (no explicit licence)",
    "DSB2018stardist": "BBBC038v1, CC0",
    "ISBI2012EM": "ISBI 2012 EM, research use with citation (no explicit licence)",
    "DDSMtissue": "DDSM images research use; tissue masks GPLv3 repo (no data licence)",
    "IBSISTS": "IBSI / TCIA Soft-tissue-Sarcoma, CC BY 3.0",
    "IBSISTST1": "IBSI / TCIA Soft-tissue-Sarcoma, CC BY 3.0",
    "BraTS2013deepmedic": "BraTS 2015 training data, CC BY-NC-SA 3.0 CH (non-commercial)",
    "CXRimlabDemo": "lung-segmentation-2d demo, MIT repo (image source not stated)",
    # ../shared/data/public2/SOURCES.md
    "CHASEDB1": "CHASE_DB1 (Kingston Univ.), CC BY 4.0",
    "HRF": "HRF (FAU Erlangen), free for research with citation",
    "STARE": "STARE, free for research with citation",
    "IDRiD": "IDRiD, CC BY 4.0",
    "PH2": "PH2 (ADDI project), free for research/education with citation",
    "BUSI": "BUSI (Al-Dhabyani 2020), CC BY article / CC0 mirror",
    "CVCClinicDB": "CVC-ClinicDB, research/education only, non-commercial",
    "AxonDeepSegSEM": "axondeepseg data_axondeepseg_sem, MIT",
    "EBHISeg": "EBHI-Seg (Shi et al. 2023), public, 'contact us'",
    "DC1000": "DC1000 (Wang et al. 2023), cite the paper (no licence stated)",
    "UFBA425": "UFBA-425, Apache-2.0 repo",
    "MSDSpleen": "MSD Task09 Spleen, CC BY-SA 4.0",
    "SpineGeneric": "Spine-Generic, MIT",
}
UNKNOWN_TERMS = "unknown: not listed in SOURCES.md"


def sources_of(names: list[str]) -> dict[str, dict[str, object]]:
    """Source tag -> {cases, terms} for the case names a model was trained on."""
    counts = Counter(source_tag(n) for n in names)
    return {
        tag: {"cases": n, "terms": SOURCE_TERMS.get(tag, UNKNOWN_TERMS)} for tag, n in sorted(counts.items())
    }
