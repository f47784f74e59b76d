enum _KianaLearnPlaceholder {}
