"""Splat-and-Distill (Shavin & Benaim) on RGB-D logs: feed-forward feature Gaussians from
depth inside an EMA student–teacher loop (`train.snd_train`)."""
