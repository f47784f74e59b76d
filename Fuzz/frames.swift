// libFuzzer target for the link framing (Sources/KianaNet/Framing.swift), compiled alone with it by
// scripts/fuzz.sh. The input is fed to FrameDecoder and MessageDecoder in pieces whose sizes come
// from the first byte; the oracle: the frames/messages returned, re-encoded, are exactly the prefix
// of the input that was consumed, what remains pending is the rest, and an error is only ever an
// empty or over-long length announcement.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let piece = Int(data[0] & 0x3F) + 1
    let input = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))

    // Link frames: u16 length ‖ body.
    var frames = FrameDecoder()
    var out: [UInt8] = []
    var fed = 0
    var failed = false
    feeding: while fed < input.count {
        let end = min(fed + piece, input.count)
        frames.append(input[fed..<end])
        fed = end
        while true {
            do {
                guard let f = try frames.next() else { break }
                out += try FrameDecoder.encode(f)
            } catch {
                let at = out.count
                guard input[at] == 0 && input[at + 1] == 0 else { fatalError("frame error on a valid length: \(error)") }
                failed = true
                break feeding
            }
        }
    }
    if !failed {
        guard out == Array(input[..<out.count]) else { fatalError("frames do not re-encode to the input") }
        guard frames.pendingCount == input.count - out.count else { fatalError("pending bytes lost") }
    }

    // Link messages: u32 length ‖ CBOR, at most maxMessage (small here so the fuzzer reaches it).
    let limit = 300
    var messages = MessageDecoder(maxMessage: limit)
    var consumed = 0
    fed = 0
    messaging: while fed < input.count {
        let end = min(fed + piece, input.count)
        messages.append(input[fed..<end])
        fed = end
        while true {
            do {
                guard let m = try messages.next() else { break }
                let again = try MessageDecoder.encode(m, maxMessage: limit, chunk: piece).flatMap { $0 }
                guard again == Array(input[consumed..<(consumed + again.count)]) else { fatalError("message does not re-encode to the input") }
                consumed += again.count
            } catch {
                let h = input[consumed..<(consumed + 4)].reduce(0) { $0 << 8 | Int($1) }
                guard h == 0 || h > limit else { fatalError("message error on a valid length \(h): \(error)") }
                break messaging
            }
        }
    }
    return 0
}
