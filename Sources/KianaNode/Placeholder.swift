enum _KianaNodePlaceholder {}
