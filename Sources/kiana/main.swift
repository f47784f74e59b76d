print("kiana")
