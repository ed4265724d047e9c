"""Map math shared by the L-CAM model, every explainer, the metrics and viz: normalise, resize, blur, substrates.
May import: torch only (nothing of lcam); everything above may import it."""
from lcam.maps.normalise import minmax_normalize, normalize_then_upsample, upsample, upsample_then_normalize
from lcam.maps.substrates import RISE_BLUR_KERNEL, RISE_BLUR_SIGMA, SUBSTRATES, blur, gaussian_kernel1d, substrate_images

__all__ = ["minmax_normalize", "upsample", "normalize_then_upsample", "upsample_then_normalize",
           "RISE_BLUR_KERNEL", "RISE_BLUR_SIGMA", "SUBSTRATES", "blur", "gaussian_kernel1d", "substrate_images"]
