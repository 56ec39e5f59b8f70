"""Parts the latent-diffusion methods share (D3AD, DiAD): the autoencoder, the latent denoiser and
their size presets, each trained as a stage of a staged run."""
