"""Feature-map distillation by mean squared error."""

from segdistill.losses.registry import check_pair, register, require_unit_temperature


@register("mse")
def mse_loss(student, teacher, label=None, ignore_index=255, temperature=1.0):
    """Mean over all N*C*H*W elements of (student - teacher)^2; label is not used, temperature must be 1."""
    teacher = check_pair("mse", student, teacher)
    require_unit_temperature("mse", temperature)
    return ((student - teacher) ** 2).mean()
