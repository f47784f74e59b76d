import KianaNet
import Testing

/// HOST:PORT as `kiana peers add`, `kiana join` and the dialer read it.
@Suite struct PeerAddressTests {
    @Test(arguments: [
        ("192.168.1.20:8470", "192.168.1.20", 8470),
        ("kitchen.local:8470", "kitchen.local", 8470),
        ("my_pi-2.home.arpa:1", "my_pi-2.home.arpa", 1),
        ("[fe80::1%eth0]:8470", "fe80::1%eth0", 8470),
        ("[::1]:65535", "::1", 65535),
        // Without brackets an IPv6 address is split at its last colon, as it always was.
        ("2001:db8::5:8470", "2001:db8::5", 8470),
        ("nas.lan.:8470", "nas.lan.", 8470),
        ("[fe80::1%br-lan]:8470", "fe80::1%br-lan", 8470),
    ])
    func validAddressesSplit(_ address: String, _ host: String, _ port: Int) throws {
        let (h, p) = try PeerNetwork.parse(address)
        #expect(h == host && p == port)
    }

    @Test(arguments: [
        ("a b:5", "does not name a host"),
        ("[a b]:8470", "does not name a host"),
        // An IPv6 address typed without a port is not split into a host and a port.
        ("2001:db8::5", "does not name a host"),
        ("::1", "does not name a host"),
        ("host:8470:8470", "does not name a host"),
        ("[fe80::1%]:8470", "does not name a host"),
        ("-bad.local:1", "does not name a host"),
        ("a..b:1", "does not name a host"),
        // Digits and dots must be an IPv4 address.
        ("10.0.0.300:1", "does not name a host"),
        ("10.1:8470", "does not name a host"),
        ("1.2.3.4.5:8470", "does not name a host"),
        ("0x7f.1:8470", "does not name a host"),
        ("0x.1:8470", "does not name a host"),
        ("0x7f000001:8470", "does not name a host"),
        ("0x7f.0.0.1:8470", "does not name a host"),
        ("10.0.0.1.:8470", "does not name a host"),
        ("010.0.0.1:8470", "does not name a host"),
        (String(repeating: "a", count: 64) + ".local:1", "does not name a host"),
        (String(repeating: "ab.", count: 100) + "x:1", "longer than 253"),
        (":8470", "has no host"),
        ("host:0", "with a port 1-65535"),
        ("host", "with a port 1-65535"),
        ("host:99999", "with a port 1-65535"),
    ])
    func badAddressesSayWhy(_ address: String, _ why: String) {
        #expect(throws: KianaNetError.self) { try PeerNetwork.parse(address) }
        do {
            _ = try PeerNetwork.parse(address)
        } catch {
            #expect(error.message.contains(why), "\(address): \(error.message)")
        }
    }

    /// A name another device gives itself is shown cleaned: no line breaks, tabs, bidi overrides
    /// or separators (each a space), at most 64 characters and 256 bytes.
    @Test func peerNamesAreCleanedBeforeTheyAreShown() {
        #expect(PeerName.clean("Küchen-Pi 🍳") == "Küchen-Pi 🍳")
        #expect(PeerName.clean("a\nb\tc\u{202E}d\u{2028}e") == "a b c d e")
        #expect(PeerName.clean(String(repeating: "x", count: 100)).count == 64)
        let heavy = "e" + String(repeating: "\u{301}", count: 1000)  // one character, 2,001 bytes
        #expect(PeerName.clean(heavy + "f").utf8.count <= 256)
        #expect(PeerName.isClean("Laptop") && !PeerName.isClean("two\nlines"))
    }
}
