import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The web UI and the OpenAPI document: static files shipped as the module's resources (Web/), served from a
/// fixed table. No request path ever reaches the file system, so path traversal is impossible
/// by construction; the files are read once.
enum WebUI {
    static let xFrameOptions = HTTPField.Name("X-Frame-Options")!

    static let files: [String: (resource: String, type: String)] = [
        "/": ("index.html", "text/html; charset=utf-8"),
        "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
        "/ui/recorder.js": ("recorder.js", "text/javascript; charset=utf-8"),
        "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
        "/openapi.json": ("openapi.json", "application/json"),
    ]

    static let contents: [String: ByteBuffer] = {
        var out: [String: ByteBuffer] = [:]
        for (path, f) in files {
            let name = (f.resource as NSString).deletingPathExtension
            let ext = (f.resource as NSString).pathExtension
            if let url = Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Web"),
                let data = try? Data(contentsOf: url)
            {
                out[path] = ByteBuffer(bytes: data)
            }
        }
        return out
    }()

    static func add<Context: RequestContext>(to router: Router<Context>) {
        for (path, f) in files {
            router.get(RouterPath(path)) { _, _ -> Response in
                guard let body = contents[path] else { throw HTTPError(.internalServerError, message: "the web UI files are missing from this build") }
                // Never inside another site's frame (clickjacking the Forget button); no outside resources.
                return Response(
                    status: .ok,
                    headers: [
                        .contentType: f.type, .cacheControl: "no-cache", Self.xFrameOptions: "DENY",
                        .contentSecurityPolicy: "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'",
                    ],
                    body: .init(byteBuffer: body))
            }
        }
    }
}
