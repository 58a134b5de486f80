"""The bundled default model, trained by `inflor-deploy train` (see README, "Bundled model").

digits_srif_t4.pt: digits_cnn on scikit-learn's digits, T=4, SRIF + MPR,
Vth = 0.5; its metadata records the test accuracy and training settings.
"""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "digits_srif_t4.pt"
