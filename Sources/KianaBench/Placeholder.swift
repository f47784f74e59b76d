enum _KianaBenchPlaceholder {}
