"""The render vocabulary, a leaf that imports nothing of the engine: the modes (`modes`), what each model accepts and
its defaults (`models`), and the one registry of ControlNet types (`controlnets`). The request type, the settings,
the preprocessors, the tiny profile, the pages and the CLI all read them here."""
