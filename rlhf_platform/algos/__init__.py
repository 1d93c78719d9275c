"""Pure torch functions for RL post-training: advantages, losses, KL estimators."""
