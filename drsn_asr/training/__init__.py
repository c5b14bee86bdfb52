"""How models are made: the synthetic corpus and its TTS engines, noise, augmentation, data sources, the training
recipe and custom commands from text."""
