"""Autoregressive image models: tokenizers (VQ-VAE/VQGAN, dVAE) and priors over their codes."""
