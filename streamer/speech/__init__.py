"""Words from utterances: features, the HMM bank, training and evaluation."""
