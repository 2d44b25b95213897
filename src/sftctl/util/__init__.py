"""Small helpers every layer may use: atomic writes, locks, did-you-mean, secret names."""
