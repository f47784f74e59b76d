import KianaCore
import Testing

/// The sealed backup stream: round trips over frame boundaries, and every way of tampering with
/// it refused by rule.
@Suite struct BackupSealTests {
    /// Cheap scrypt for tests (the product uses N = 2^16).
    static let quick = BackupSeal.Parameters(logN: 10, r: 8, p: 1)
    static let pass = Array("correct horse battery".utf8)

    /// `payload` sealed in frames of at most `BackupSeal.chunk` bytes: header prefix, frames.
    static func seal(_ payload: [UInt8]) throws -> (prefix: [UInt8], frames: [[UInt8]]) {
        var s = try BackupSeal.Sealer(passphrase: pass, parameters: quick, created: 1)
        var frames: [[UInt8]] = []
        var rest = payload[...]
        repeat {
            let piece = Array(rest.prefix(BackupSeal.chunk))
            rest = rest.dropFirst(piece.count)
            frames.append(try s.seal(piece, last: rest.isEmpty))
        } while !rest.isEmpty
        return (s.header.prefix, frames)
    }

    static func opener(_ prefix: [UInt8], passphrase: [UInt8] = pass) throws -> BackupSeal.Opener {
        let n = Int(prefix[8]) << 24 | Int(prefix[9]) << 16 | Int(prefix[10]) << 8 | Int(prefix[11])
        return try BackupSeal.Opener(header: BackupSeal.Header(decoding: Array(prefix[12..<(12 + n)])), passphrase: passphrase)
    }

    @Test(arguments: [0, 1, BackupSeal.chunk - 1, BackupSeal.chunk, BackupSeal.chunk + 1, 5 * BackupSeal.chunk / 2])
    func roundTripsOverFrameBoundaries(_ size: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let (prefix, frames) = try Self.seal(payload)
        var o = try Self.opener(prefix)
        var out: [UInt8] = []
        for f in frames { out += try o.open(Array(f.dropFirst(4))) }
        #expect(o.finished)
        #expect(out == payload)
    }

    @Test func aWrongPassphraseIsToldApartFromDamage() throws {
        let (prefix, _) = try Self.seal([1, 2, 3])
        #expect(throws: KianaCoreError.self) { _ = try Self.opener(prefix, passphrase: Array("wrong one!".utf8)) }
        do { _ = try Self.opener(prefix, passphrase: Array("wrong one!".utf8)) } catch { #expect((error as? KianaCoreError)?.code == .unauthorized) }
    }

    @Test func tamperingIsRefused() throws {
        let payload = (0..<(2 * BackupSeal.chunk + 10)).map { UInt8(truncatingIfNeeded: $0) }
        let (prefix, frames) = try Self.seal(payload)
        func openAll(_ prefix: [UInt8], _ frames: [[UInt8]]) throws -> Bool {
            var o = try Self.opener(prefix)
            for f in frames { _ = try o.open(Array(f.dropFirst(4))) }
            return o.finished
        }
        #expect(try openAll(prefix, frames))
        // A flipped bit in any frame.
        for i in frames.indices {
            var f = frames
            f[i][4 + f[i].count / 2 - 2] ^= 0x01
            #expect(throws: KianaCoreError.self) { _ = try openAll(prefix, f) }
        }
        // Frames swapped, the last dropped (never "finished"), a frame repeated.
        #expect(throws: KianaCoreError.self) { _ = try openAll(prefix, [frames[1], frames[0], frames[2]]) }
        #expect(try !openAll(prefix, Array(frames.dropLast())))
        #expect(throws: KianaCoreError.self) { _ = try openAll(prefix, [frames[0], frames[0], frames[1], frames[2]]) }
        // The header is authenticated with every frame: a changed creation time is noticed.
        var h = try BackupSeal.Header(decoding: Array(prefix[12...]))
        h.created += 1
        #expect(throws: KianaCoreError.self) { _ = try openAll(h.prefix, frames) }
        // Data after the last frame.
        #expect(throws: KianaCoreError.self) { _ = try openAll(prefix, frames + [frames[2]]) }
    }

    @Test func headersAskingTooMuchAreRefusedBeforeAnyWork() throws {
        for (logN, r, p) in [(30, 8, 1), (16, 64, 1), (16, 8, 64), (4, 8, 1)] {
            let h = BackupSeal.Header(
                parameters: .init(logN: logN, r: r, p: p), salt: Array(repeating: 1, count: 16), noncePrefix: Array(repeating: 2, count: 7),
                check: Array(repeating: 3, count: 16), created: 0)
            #expect(throws: KianaCoreError.self) { _ = try BackupSeal.Header(decoding: h.cbor.encoded) }
        }
    }

    @Test func theFileStreamAcceptsOnlyKnownNamesOnce() throws {
        var r = BackupFiles.Reader()
        let stream = BackupFiles.entryHeader(name: "identity.key", size: 3) + [7, 8, 9] + BackupFiles.entryHeader(name: "config.json", size: 0) + BackupFiles.end
        var events: [BackupFiles.Event] = []
        for b in stream { events += try r.feed([b]) }  // byte by byte: boundaries anywhere
        #expect(events == [.begin(name: "identity.key", size: 3), .bytes([7]), .bytes([8]), .bytes([9]), .begin(name: "config.json", size: 0), .end])
        var bad = BackupFiles.Reader()
        #expect(throws: KianaCoreError.self) { _ = try bad.feed(BackupFiles.entryHeader(name: "../../etc/passwd", size: 1)) }
        var twice = BackupFiles.Reader()
        #expect(throws: KianaCoreError.self) {
            _ = try twice.feed(BackupFiles.entryHeader(name: "api.token", size: 0) + BackupFiles.entryHeader(name: "api.token", size: 0))
        }
    }
}
