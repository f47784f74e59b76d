// swift-tools-version: 6.1
import PackageDescription

// The embedder's and vector index's SIMD kernels need AVX2 + FMA on x86_64 (x86-64-v3, every
// x86 CPU since 2015); without them SIMD8 FMA becomes scalar library calls. KianaAI is optimised
// in debug builds too: an unoptimised BERT forward pass takes seconds per sentence. Decision 38.
#if arch(x86_64)
    let simdSettings: [SwiftSetting] = [
        .unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"]),
        .unsafeFlags(["-O"], .when(configuration: .debug)),
    ]
#else
    let simdSettings: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]
#endif

let package = Package(
    name: "KIana",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiana", targets: ["kiana"]),
        .library(name: "KianaCore", targets: ["KianaCore"]),
        .library(name: "KianaStore", targets: ["KianaStore"]),
        .library(name: "KianaNode", targets: ["KianaNode"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        // Metrics API and its Prometheus exporter (issue 19; decision 98 replaces decision 62's renderer).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Pure logic: identity, canonical CBOR, entries, blocks, Merkle trees, PoA rules, CRDT. No I/O.
        .target(
            name: "KianaCore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                // scrypt for sealed backups.
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ]),
        // SQLite via GRDB: ledger tables, materialized knowledge state, pending entries, settings.
        .target(
            name: "KianaStore",
            dependencies: [
                "KianaCore",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),
        // Local AI: embedder, GGUF engine, vector index, retrieval, chat backends.
        .target(
            name: "KianaAI",
            dependencies: [
                "KianaCore", "KianaStore",
                .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: simdSettings),
        // zlib (Debian zlib1g-dev): deflate for the sync batches.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Networking: mDNS/DNS-SD discovery, Noise-encrypted TCP links, link protocol, pairing, sync.
        .target(
            name: "KianaNet",
            dependencies: [
                "KianaCore", "KianaStore", "CZlib",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // Federated learning. Starts as its error type.
        .target(name: "KianaLearn", dependencies: ["KianaCore"]),
        // HTTP surface (Hummingbird).
        .target(
            name: "KianaServer",
            dependencies: [
                "KianaCore", "KianaStore", "KianaAI", "KianaNet",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ], resources: [.copy("Web")]),
        // Wiring: configuration, data directory, one ServiceGroup, commands' logic.
        .target(
            name: "KianaNode",
            dependencies: [
                "KianaCore", "KianaStore", "KianaServer", "KianaNet", "KianaAI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // `kiana bench …` measurements, each beside its reference primitive.
        .target(
            name: "KianaBench",
            dependencies: [
                "KianaCore", "KianaStore", "KianaNet", "KianaAI", "KianaNode",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ], resources: [.copy("Resources/retrieval-set.json"), .copy("Resources/qa-set.json"), .copy("Resources/voice-sentences.txt")]),
        .executableTarget(
            name: "kiana",
            dependencies: [
                "KianaNode", "KianaBench", "KianaCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Helpers shared by the test targets: locating ../shared, running processes.
        .target(name: "KianaTestSupport", dependencies: ["KianaStore"], path: "Tests/KianaTestSupport"),
        .testTarget(
            name: "KianaCoreTests",
            dependencies: [
                "KianaCore", "KianaTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]),
        .testTarget(
            name: "KianaNetTests",
            dependencies: [
                "KianaNet", "KianaCore", "KianaStore", "KianaTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "KianaAITests",
            dependencies: [
                "KianaAI", "KianaCore", "KianaStore", "KianaTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]),
        .testTarget(name: "KianaStoreTests", dependencies: ["KianaStore", "KianaCore", "KianaTestSupport", .product(name: "GRDB", package: "GRDB.swift")]),
        // In-process router tests: HummingbirdTesting against a small fake of the node (no sockets, no models).
        .testTarget(
            name: "KianaServerTests",
            dependencies: [
                "KianaServer", "KianaStore", "KianaCore", "KianaAI", "KianaNet", "KianaTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]),
        .testTarget(name: "KianaNodeTests", dependencies: ["KianaNode", "KianaCore", "KianaStore", "KianaNet", "KianaTestSupport", "kiana"]),
    ],
    swiftLanguageModes: [.v6]
)
