"""The 19 HPA single-cell classes of the Kaggle competition."""

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)
NUM_CLASSES = len(CLASS_NAMES)
NEGATIVE = 18
CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
# Stage-2 segmentation targets: the 19 classes plus a background channel.
BACKGROUND = NUM_CLASSES
NUM_SEGM_CHANNELS = NUM_CLASSES + 1
