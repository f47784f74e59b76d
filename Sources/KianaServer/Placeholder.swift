enum _KianaServerPlaceholder {}
