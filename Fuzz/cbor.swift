// libFuzzer target for the CBOR decoder (Sources/KianaCore/CBOR.swift), compiled alone with it by
// scripts/fuzz.sh. Besides "never crash, never hang, never read out of bounds" (the address
// sanitizer checks that), it checks the determinism law: the decoder accepts only core
// deterministic encoding, so whatever it accepts re-encodes to exactly the input bytes, and
// decoding that encoding again gives an equal value.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCBOR(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let value: CBOR
    do { value = try CBOR.decode(bytes) } catch { return 0 }
    let encoded = value.encoded
    guard encoded == bytes else {
        fatalError("accepted input does not re-encode to itself:\n in  \(hex(bytes))\n out \(hex(encoded))\n value \(value)")
    }
    do {
        let again = try CBOR.decode(encoded)
        guard again == value else { fatalError("decoding the encoding changed the value:\n\(value)\n\(again)") }
    } catch {
        fatalError("encoding of an accepted value does not decode: \(error)\n \(hex(encoded))")
    }
    return 0
}

private func hex(_ b: [UInt8]) -> String {
    let d = Array("0123456789abcdef")
    return String(b.flatMap { [d[Int($0 >> 4)], d[Int($0 & 0xF)]] })
}
