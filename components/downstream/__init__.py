"""Downstream proof: classifier and segmenter registries, the cross-validation protocol on real / synthetic /
hybrid training sets, metrics (Dice, IoU, ASD, HD, HD95; macro classification scores), XAI and report tables."""
