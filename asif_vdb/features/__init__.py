"""What users do with a store: anchors, label sets and classification, galleries and search, explanations."""
