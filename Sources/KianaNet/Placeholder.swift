enum _KianaNetPlaceholder {}
