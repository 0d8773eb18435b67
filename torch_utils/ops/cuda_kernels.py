"""Optional CUDA kernels for bias_act and upfirdn2d (placeholder: no kernels yet).

``get_bias_act()`` / ``get_upfirdn2d()`` return a callable with the reference signature, or None
when the kernels are unavailable; callers then use the PyTorch reference path.
"""


def get_bias_act():
    return None


def get_upfirdn2d():
    return None
