"""Diffusion models: DDPM/DDIM (survey ch. 4), DPM-Solver++ and the variational bound in bits/dim.

The public API; the U-Net lives in :mod:`zoo.diffusion.unet` and is imported
by :func:`build_objective` only when an objective is built.
"""

from zoo.diffusion.ddim import ddim_sample, ddim_timesteps
from zoo.diffusion.ddpm import (
    PREDICTIONS,
    VARIANCES,
    ancestral_sample,
    diffusion_loss,
    eps_from_x0,
    p_mean_variance,
    predict_eps,
    predict_x0,
    prediction_target,
    q_posterior,
    q_sample,
)
from zoo.diffusion.dpm_solver import dpm_solver_pp_sample
from zoo.diffusion.likelihood import (
    discretized_gaussian_log_likelihood,
    exact_bpd,
    mc_bpd,
    normal_kl,
    prior_bpd,
    vlb_terms,
)
from zoo.diffusion.objective import build_objective
from zoo.diffusion.schedules import (
    Schedule,
    make_schedule,
    register_schedule,
    schedule_from_betas,
    schedule_names,
)
from zoo.diffusion.thresholding import dynamic_threshold

__all__ = [
    "PREDICTIONS",
    "VARIANCES",
    "Schedule",
    "ancestral_sample",
    "build_objective",
    "ddim_sample",
    "ddim_timesteps",
    "diffusion_loss",
    "discretized_gaussian_log_likelihood",
    "dpm_solver_pp_sample",
    "dynamic_threshold",
    "eps_from_x0",
    "exact_bpd",
    "make_schedule",
    "mc_bpd",
    "normal_kl",
    "p_mean_variance",
    "predict_eps",
    "predict_x0",
    "prediction_target",
    "prior_bpd",
    "q_posterior",
    "q_sample",
    "register_schedule",
    "schedule_from_betas",
    "schedule_names",
    "vlb_terms",
]
