"""Data layer: manifest contract, importers, toy generator, splits, transforms, validation."""
