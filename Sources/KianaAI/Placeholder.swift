enum _KianaAIPlaceholder {}
