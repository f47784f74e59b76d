import Crypto
import Foundation
import KianaCore
import KianaNet
import KianaTestSupport
import Testing

/// Noise XX against an independent implementation (PyPI `noiseprotocol`) and against itself.
@Suite struct NoiseTests {
    static let script = Shared.packageRoot.appendingPathComponent("Tests/python/noise_peer.py").path
    static let prologue = SHA.hash(Array("network id".utf8))

    /// A python peer driven over length-prefixed frames.
    final class Peer {
        let process = Process()
        let input = Pipe(), output = Pipe()

        init(role: String) throws {
            process.executableURL = URL(fileURLWithPath: python3())
            process.arguments = [NoiseTests.script, role, Hex.encode(NoiseTests.prologue)]
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.standardError
            try process.run()
        }

        func send(_ b: [UInt8]) {
            input.fileHandleForWriting.write(Data([UInt8(b.count >> 8), UInt8(b.count & 0xFF)] + b))
        }

        /// Reads one frame off the cooperative pool (python may take a while to start).
        func receive() async throws -> [UInt8] {
            let reader = output.fileHandleForReading
            let frame: [UInt8]? = await offPool {
                let head = reader.readData(ofLength: 2)
                guard head.count == 2 else { return nil }
                let n = Int(head[head.startIndex]) << 8 | Int(head[head.startIndex + 1])
                return [UInt8](reader.readData(ofLength: n))
            }
            return try #require(frame, "python peer closed the stream")
        }

        func report() async throws -> [String: Any] {
            let r = try JSONSerialization.jsonObject(with: Data(try await receive())) as! [String: Any]
            let process = self.process
            await offPool { process.waitUntilExit() }
            return r
        }
    }

    @Test func swiftInitiatorWithPythonResponder() async throws {
        let peer = try Peer(role: "responder")
        let key = Curve25519.KeyAgreement.PrivateKey()
        var hs = NoiseHandshake(role: .initiator, staticKey: key, prologue: Self.prologue)
        peer.send(try hs.writeMessage(Array("swift says hello".utf8)))
        let p2 = try hs.readMessage(try await peer.receive())
        #expect(String(decoding: p2, as: UTF8.self) == "python's identity payload")
        peer.send(try hs.writeMessage(Array("swift identity".utf8)))
        #expect(hs.isComplete)
        var (tx, rx) = try hs.split()
        peer.send(try tx.encrypt(Array("ping".utf8)))
        #expect(String(decoding: try rx.decrypt(try await peer.receive()), as: UTF8.self) == "echo:ping")
        let r = try await peer.report()
        #expect(r["hh"] as? String == Hex.encode(hs.handshakeHash))
        #expect(r["static"] as? String == hs.remoteStatic.map(Hex.encode))
        #expect(r["payloads"] as? [String] == [Hex.encode(Array("swift says hello".utf8)), Hex.encode(Array("swift identity".utf8))])
        #expect(peer.process.terminationStatus == 0)
    }

    @Test func pythonInitiatorWithSwiftResponder() async throws {
        let peer = try Peer(role: "initiator")
        let key = Curve25519.KeyAgreement.PrivateKey()
        var hs = NoiseHandshake(role: .responder, staticKey: key, prologue: Self.prologue)
        #expect(String(decoding: try hs.readMessage(try await peer.receive()), as: UTF8.self) == "python says hello")
        peer.send(try hs.writeMessage(Array("swift identity".utf8)))
        #expect(String(decoding: try hs.readMessage(try await peer.receive()), as: UTF8.self) == "python's identity payload")
        var (tx, rx) = try hs.split()
        peer.send(try tx.encrypt(Array("pong".utf8)))
        #expect(String(decoding: try rx.decrypt(try await peer.receive()), as: UTF8.self) == "echo:pong")
        let r = try await peer.report()
        #expect(r["hh"] as? String == Hex.encode(hs.handshakeHash))
        #expect(r["static"] as? String == hs.remoteStatic.map(Hex.encode))
    }

    func handshake(_ pi: [UInt8], _ pr: [UInt8]) throws -> (NoiseHandshake, NoiseHandshake) {
        var i = NoiseHandshake(role: .initiator, staticKey: .init(), prologue: pi)
        var r = NoiseHandshake(role: .responder, staticKey: .init(), prologue: pr)
        _ = try r.readMessage(try i.writeMessage())
        _ = try i.readMessage(try r.writeMessage())
        _ = try r.readMessage(try i.writeMessage())
        return (i, r)
    }

    @Test func differentNetworksCannotHandshake() {
        #expect(throws: KianaNetError.self) { try handshake(Self.prologue, SHA.hash([1])) }
    }

    @Test func tamperedReplayedAndOutOfTurnMessagesFail() throws {
        var i = NoiseHandshake(role: .initiator, staticKey: .init(), prologue: Self.prologue)
        var r = NoiseHandshake(role: .responder, staticKey: .init(), prologue: Self.prologue)
        _ = try r.readMessage(try i.writeMessage())
        var m2 = try r.writeMessage()
        m2[40] ^= 1
        #expect(throws: KianaNetError.self) { _ = try i.readMessage(m2) }
        #expect(throws: KianaNetError.self) { _ = try r.readMessage([1, 2, 3]) }
        var fresh = NoiseHandshake(role: .responder, staticKey: .init(), prologue: [])
        #expect(throws: KianaNetError.self) { _ = try fresh.readMessage([UInt8](repeating: 0, count: 10)) }
        #expect(throws: KianaNetError.self) { _ = try fresh.writeMessage() }  // not the responder's turn

        let (a, b) = try handshake(Self.prologue, Self.prologue)
        #expect(a.handshakeHash == b.handshakeHash)
        var (atx, _) = try a.split()
        var (_, brx) = try b.split()
        let c1 = try atx.encrypt([1, 2, 3])
        let c2 = try atx.encrypt([4])
        #expect(try brx.decrypt(c1) == [1, 2, 3])
        #expect(throws: KianaNetError.self) { _ = try brx.decrypt(c1) }  // replay
        #expect(try brx.decrypt(c2) == [4])
        #expect(throws: KianaNetError.self) { _ = try atx.encrypt([UInt8](repeating: 0, count: 70_000)) }
    }
}

/// The identity payload binds the Noise static key to the device's Ed25519 identity.
@Suite struct HandshakeIdentityTests {
    @Test func identitiesAreProvenBothWays() throws {
        let alice = DeviceIdentity.generate()
        let bob = DeviceIdentity.generate()
        let prologue = SHA.hash([42])
        var i = NoiseHandshake(role: .initiator, staticKey: alice.transportKey, prologue: prologue)
        var r = NoiseHandshake(role: .responder, staticKey: bob.transportKey, prologue: prologue)
        _ = try r.readMessage(try i.writeMessage())
        let bobSays = try i.readMessage(try r.writeMessage(HandshakeIdentity.payload(for: bob)))
        #expect(try HandshakeIdentity.verify(bobSays, remoteStatic: i.remoteStatic!) == bob.publicKey)
        let aliceSays = try r.readMessage(try i.writeMessage(HandshakeIdentity.payload(for: alice)))
        #expect(try HandshakeIdentity.verify(aliceSays, remoteStatic: r.remoteStatic!) == alice.publicKey)
    }

    @Test func aPayloadForAnotherStaticKeyIsRefused() {
        let mallory = DeviceIdentity.generate()
        let victim = DeviceIdentity.generate()
        // Mallory replays the victim's payload while using her own static key.
        let stolen = HandshakeIdentity.payload(for: victim)
        #expect(throws: KianaNetError.self) { try HandshakeIdentity.verify(stolen, remoteStatic: mallory.transportPublicKey) }
        #expect(throws: KianaNetError.self) { try HandshakeIdentity.verify([0xA0], remoteStatic: victim.transportPublicKey) }
        #expect(throws: KianaNetError.self) { try HandshakeIdentity.verify([UInt8](repeating: 0, count: 5000), remoteStatic: victim.transportPublicKey) }
    }
}
