import Foundation
import KianaCore
import KianaTestSupport
import Testing

/// Every scenario of EIP-225's test cases (shared/vectors/clique) against `Membership`.
@Suite struct MembershipVectorTests {
    struct Scenario: Decodable, CustomTestStringConvertible {
        struct BlockSpec: Decodable {
            var signer: String
            var voted: String?
            var auth: Bool?
            var checkpoint: [String]?
        }
        var name: String
        var signers: [String]
        var blocks: [BlockSpec]
        var epoch: UInt64?
        var results: [String]?
        var failure: String?
        var testDescription: String { name }
    }

    struct File: Decodable { var scenarios: [Scenario] }

    static let path = "vectors/clique/eip225-voting.json"

    static func scenarios() -> [Scenario] {
        guard let data = try? Data(contentsOf: Shared.root.appendingPathComponent(path)),
            let f = try? JSONDecoder().decode(File.self, from: data)
        else { return [] }
        return f.scenarios
    }

    /// A stable 32-byte key per letter.
    static func key(_ name: String) -> [UInt8] { SHA.hash(Array("clique-\(name)".utf8)) }

    @Test func vectorsArePresent() {
        let s = Self.scenarios()
        if s.isEmpty {
            if Shared.isCI { Issue.record("missing \(Self.path) under \(Shared.root.path)") }
            return
        }
        #expect(s.count >= 20)
    }

    @Test(arguments: scenarios())
    func scenario(_ s: Scenario) {
        let names = Set(s.signers + s.blocks.flatMap { [$0.signer] + ($0.voted.map { [$0] } ?? []) })
        let byKey = Dictionary(uniqueKeysWithValues: names.map { (Self.key($0), $0) })
        var m = Membership(authorities: s.signers.map(Self.key))
        var failure: KianaCoreError?
        for (i, b) in s.blocks.enumerated() {
            let number = UInt64(i + 1)
            if let epoch = s.epoch, number % epoch == 0 {
                m.checkpoint()
                if let cp = b.checkpoint { #expect(Set(cp.map(Self.key)) == m.authorities, "checkpoint lists the signers") }
            }
            // A block without a vote still has to be signed by an authority.
            guard m.authorities.contains(Self.key(b.signer)) else {
                failure = KianaCoreError(.invalidBlock, "unauthorized signer", rule: .authority)
                break
            }
            if let voted = b.voted {
                do { try m.apply(signer: Self.key(b.signer), vote: Vote(target: Self.key(voted), authorize: b.auth ?? false)) } catch {
                    failure = error
                    break
                }
            }
        }
        switch s.failure {
        case "unauthorizedSigner"?:
            #expect(failure?.rule == .authority)
        case "recentlySigned"?, nil:
            // KI_ana has no recently-signed limit, so those scenarios are accepted.
            #expect(failure == nil, "\(failure.map { "\($0)" } ?? "")")
            if let want = s.results {
                #expect(m.authorities.map { byKey[$0]! }.sorted() == want.sorted())
            }
        default:
            Issue.record("unknown failure kind \(s.failure!)")
        }
    }
}
