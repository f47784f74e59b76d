import Foundation
import KianaCore
import Testing

@testable import KianaNet

/// The bounds and pacing of `entries.stuck` offers (decision 111): what a body may hold before
/// anything in it is decoded, how often one set goes to a member, how often a member's offers
/// are looked at.
@Suite struct StuckOffersTests {
    let member: [UInt8] = Array(repeating: 1, count: 32)

    @Test func aBodyIsBoundedBeforeItsEntriesAreDecoded() {
        let one: CBOR = .bytes([1, 2, 3])
        #expect(StuckOffers.entries(in: .map(["entries": .array([one, one])])) == [[1, 2, 3], [1, 2, 3]])
        let refused: [(String, CBOR)] = [
            ("not a map", .array([one])),
            ("no entries", .map(["other": .array([one])])),
            ("empty", .map(["entries": .array([])])),
            ("a text among the entries", .map(["entries": .array([one, .text("x")])])),
            ("too many", .map(["entries": .array(Array(repeating: one, count: StuckOffers.maxEntries + 1))])),
            ("too many bytes", .map(["entries": .array(Array(repeating: .bytes(Array(repeating: 0, count: 64 * 1024)), count: 5))])),
            ("one entry over the entry limit", .map(["entries": .array([.bytes(Array(repeating: 0, count: LedgerLimits.maxEntryBytes + 1))])])),
        ]
        for (why, body) in refused { #expect(StuckOffers.entries(in: body) == nil, "\(why)") }
        // The largest offer a sender makes passes.
        let full = CBOR.map(["entries": .array(Array(repeating: .bytes(Array(repeating: 0, count: 1024)), count: StuckOffers.maxEntries))])
        #expect(StuckOffers.entries(in: full)?.count == StuckOffers.maxEntries)
    }

    @Test func theSameSetGoesToAMemberOnceAMinuteAChangedOneAtOnce() {
        let offers = StuckOffers()
        let t0 = ContinuousClock.now
        let set: [[UInt8]] = [[1], [2]]
        #expect(offers.shouldOffer(set, to: member, now: t0))
        #expect(!offers.shouldOffer(set, to: member, now: t0 + .seconds(30)))
        #expect(offers.shouldOffer([[1]], to: member, now: t0 + .seconds(31)))
        #expect(offers.shouldOffer(set, to: member, now: t0 + .seconds(32)))
        #expect(!offers.shouldOffer(set, to: member, now: t0 + .seconds(91)))
        #expect(offers.shouldOffer(set, to: member, now: t0 + .seconds(93)))
        // Another member has its own pace.
        #expect(offers.shouldOffer(set, to: Array(repeating: 2, count: 32), now: t0 + .seconds(93)))
    }

    @Test func aMembersOffersAreLookedAtEveryTwoSecondsAtMost() {
        let offers = StuckOffers()
        let t0 = ContinuousClock.now
        #expect(offers.mayTake(from: member, now: t0))
        #expect(!offers.mayTake(from: member, now: t0 + .milliseconds(1999)))
        #expect(offers.mayTake(from: member, now: t0 + .seconds(2)))
        #expect(offers.mayTake(from: Array(repeating: 3, count: 32), now: t0 + .seconds(2)))
    }
}
