"""Generative adversarial networks: losses, the original MLP GAN, DCGAN and the style-based models.

Every model module follows one contract: `net_config()` holds the paper's architecture fields and
`build_networks(config, *, rngs)` returns `(generator, discriminator)`; the GAN objective trains
any of them with the losses of `zoo.nn.adversarial`.
"""
