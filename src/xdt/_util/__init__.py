"""Small helpers shared across layers, each a leaf: none imports anything else of xdt."""
