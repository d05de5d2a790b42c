"""probes.adapters: the instrument for other libraries -- tapping (their ResNets), lightning
(a Lightning callback), tensorboard (the rows as scalars). They import the instrument; the
instrument never imports them."""
