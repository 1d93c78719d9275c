"""The commands users run: `rlhf-train` (train.py) and `rlhf` (rlhf.py). They import recipes; nothing imports them."""
