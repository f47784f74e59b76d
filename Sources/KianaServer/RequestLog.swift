import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Gives every request an ID, and once it is answered logs it and counts it in the metrics
/// (one clock and one status for both). The ID is the client's
/// `X-Request-ID` when that is 1-64 characters of `A-Z a-z 0-9 . _ -` (so a proxy's ID carries
/// through), otherwise 16 random hex digits; it is in the logger metadata of everything logged
/// for the request (`request=…`) and sent back in the `X-Request-ID` response header.
///
/// The line and the metric labels name the route pattern (`/api/v1/knowledge/{id}`), never the
/// raw path or query (a search query is knowledge text, and raw paths would let clients create
/// unbounded label values), and no header or body. Probes (`/health`, `/ready`, `/metrics`) and
/// the UI's static files are logged at debug, everything else at info; answers of 500 and above
/// at warning, except a probe's 503 (not ready yet), which is debug like its other answers.
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    static var header: HTTPField.Name { HTTPField.Name("X-Request-ID")! }
    let metrics: Metrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let id = Self.id(from: request.headers[Self.header])
        var context = context
        context.logger[metadataKey: "request"] = .string(id)
        let start = ContinuousClock.now
        do {
            var response = try await next(request, context)
            response.headers[Self.header] = id
            answered(request, context: context, status: response.status.code, after: ContinuousClock.now - start)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            answered(request, context: context, status: status, after: ContinuousClock.now - start)
            throw error
        }
    }

    func answered(_ request: Request, context: Context, status: Int, after elapsed: Duration) {
        let route = context.endpointPath ?? "NotFound"
        let seconds = elapsed / .seconds(1)
        metrics.record(method: request.method.rawValue, route: route, status: status, seconds: seconds)
        let path = request.uri.path
        let quiet = ["/health", "/ready", "/metrics", "/control/ready"].contains(path) || ([.get, .head].contains(request.method) && WebUI.files[path] != nil)
        // A probe's 503 (/ready before the models load) is an answer, not a failure.
        let level: Logger.Level = status >= 500 && !(quiet && status == 503) ? .warning : quiet ? .debug : .info
        guard context.logger.logLevel <= level else { return }
        context.logger.log(
            level: level, "request answered",
            metadata: [
                "method": .string(request.method.rawValue),
                "route": .string(route),
                "status": .stringConvertible(status),
                "ms": .string(String(format: "%.1f", seconds * 1000)),
            ])
    }

    /// The client's ID when it is well-formed, else a new one.
    static func id(from given: String?) -> String {
        if let given, (1...64).contains(given.utf8.count),
            given.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d })
        {
            return given
        }
        var rng = SystemRandomNumberGenerator()
        return String(format: "%016llx", rng.next() as UInt64)
    }
}
