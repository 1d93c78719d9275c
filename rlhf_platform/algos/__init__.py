"""Pure torch functions for RL post-training: advantages, policy/value/entropy losses,
KL estimators and coefficient controllers, DAPO shaping and filtering, preference losses."""
