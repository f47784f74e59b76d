// libFuzzer target for the DNS message parser (Sources/KianaNet/DNSMessage.swift), compiled alone
// with it by scripts/fuzz.sh. Besides "never crash, never hang, never read out of bounds" (the
// address sanitizer checks that), it checks the round-trip law: whatever the parser accepts, the
// encoder writes back as a message the parser reads to the same value.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNS(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let message: DNSMessage
    do { message = try DNSMessage(decoding: bytes) } catch { return 0 }
    let encoded: [UInt8]
    do { encoded = try message.encoded() } catch {
        // Only refusals for size are allowed: what was read in 9000 bytes may not fit uncompressed.
        guard error.message.hasSuffix("is too large") else { fatalError("encoder failed unexpectedly: \(error)") }
        return 0
    }
    do {
        let again = try DNSMessage(decoding: encoded)
        if again != message { fatalError("round trip changed the message:\n\(message)\n\(again)") }
    } catch {
        fatalError("encoded message does not parse: \(error)")
    }
    return 0
}
