package org.alliancefhir.testserver;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.nimbusds.jose.JOSEObjectType;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.jwk.source.JWKSource;
import com.nimbusds.jose.jwk.source.JWKSourceBuilder;
import com.nimbusds.jose.proc.DefaultJOSEObjectTypeVerifier;
import com.nimbusds.jose.proc.JWSVerificationKeySelector;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.proc.DefaultJWTClaimsVerifier;
import com.nimbusds.jwt.proc.DefaultJWTProcessor;
import jakarta.servlet.Filter;
import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.ServletRequest;
import jakarta.servlet.ServletResponse;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashSet;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Bearer-token check in front of one mounted RestfulServer, on only when the server was
 * started with {@code --auth-issuer URL} (a real OpenID provider, e.g. tests/oidc).
 *
 * <p>Every request but {@code GET metadata} and {@code GET .well-known/smart-configuration}
 * needs {@code Authorization: Bearer <JWT>} signed with a key of the issuer's JWKS (fetched
 * from its discovery document, cached, served stale while the issuer is down), with
 * {@code iss} = the issuer, {@code aud} = this mount's base URL (or {@code /fhir}'s), not
 * expired; else 401 with an OperationOutcome. The verified claims go to the request attribute
 * {@link #CLAIMS} where {@link SmartScopeInterceptor} enforces scopes and the patient context
 * (403). {@code .well-known/smart-configuration} points clients at the issuer.
 */
public class BearerAuthFilter implements Filter {

	/** Request attribute holding the verified {@link JWTClaimsSet}. */
	public static final String CLAIMS = "alliance.auth.claims";

	private static final Logger ourLog = LoggerFactory.getLogger(BearerAuthFilter.class);
	private static final ObjectMapper JSON = new ObjectMapper();
	private static final long CLOCK_SKEW_S = 5;

	private final String myIssuer;
	private final Set<String> myAudiences = new HashSet<>();
	private volatile JsonNode myDiscovery;
	private volatile DefaultJWTProcessor<SecurityContext> myProcessor;

	public BearerAuthFilter(String theIssuer, int thePort, String theMountPath) {
		myIssuer = theIssuer.endsWith("/") ? theIssuer.substring(0, theIssuer.length() - 1) : theIssuer;
		for (String host : new String[] {"127.0.0.1", "localhost"}) {
			myAudiences.add("http://" + host + ":" + thePort + theMountPath);
			myAudiences.add("http://" + host + ":" + thePort + "/fhir");
		}
	}

	@Override
	public void doFilter(ServletRequest theRequest, ServletResponse theResponse, FilterChain theChain)
			throws IOException, ServletException {
		HttpServletRequest request = (HttpServletRequest) theRequest;
		HttpServletResponse response = (HttpServletResponse) theResponse;
		String path = request.getPathInfo() == null ? "" : request.getPathInfo();
		boolean get = "GET".equals(request.getMethod()) || "HEAD".equals(request.getMethod());
		if (get && ("/metadata".equals(path) || path.startsWith("/metadata?"))) {
			theChain.doFilter(theRequest, theResponse);
			return;
		}
		if (get && "/.well-known/smart-configuration".equals(path)) {
			smartConfiguration(response);
			return;
		}
		String header = request.getHeader("Authorization");
		if (header == null || !header.regionMatches(true, 0, "Bearer ", 0, 7)) {
			refuse(response, "no bearer token", "invalid_request");
			return;
		}
		JWTClaimsSet claims;
		try {
			claims = processor().process(header.substring(7).trim(), null);
		} catch (IssuerUnreachable e) {
			ourLog.warn("auth: issuer discovery failed: {}", e.getMessage());
			write(response, 503, outcome("transient", "authorization server unreachable"));
			return;
		} catch (Exception e) {
			// The reason names a claim or the key, never the token itself.
			ourLog.info("auth: 401 {} {}: {}", request.getMethod(), request.getRequestURI(), e.getMessage());
			refuse(response, "invalid token: " + e.getMessage(), "invalid_token");
			return;
		}
		request.setAttribute(CLAIMS, claims);
		theChain.doFilter(theRequest, theResponse);
	}

	private DefaultJWTProcessor<SecurityContext> processor() throws IOException {
		DefaultJWTProcessor<SecurityContext> processor = myProcessor;
		if (processor != null) {
			return processor;
		}
		synchronized (this) {
			if (myProcessor == null) {
				String jwksUri = discovery().path("jwks_uri").asText("");
				if (jwksUri.isEmpty()) {
					throw new IssuerUnreachable("discovery document has no jwks_uri");
				}
				JWKSource<SecurityContext> keys = JWKSourceBuilder.create(new URL(jwksUri))
						.retrying(true)
						.outageTolerantForever()
						.build();
				DefaultJWTProcessor<SecurityContext> created = new DefaultJWTProcessor<>();
				created.setJWSTypeVerifier(new DefaultJOSEObjectTypeVerifier<>(
						new JOSEObjectType("at+jwt"), JOSEObjectType.JWT, null));
				created.setJWSKeySelector(new JWSVerificationKeySelector<>(
						Set.of(JWSAlgorithm.RS256, JWSAlgorithm.RS384, JWSAlgorithm.PS256, JWSAlgorithm.ES256,
								JWSAlgorithm.ES384),
						keys));
				DefaultJWTClaimsVerifier<SecurityContext> verifier = new DefaultJWTClaimsVerifier<>(
						myAudiences, new JWTClaimsSet.Builder().issuer(myIssuer).build(), Set.of("exp", "sub"), null);
				verifier.setMaxClockSkew((int) CLOCK_SKEW_S);
				created.setJWTClaimsSetVerifier(verifier);
				myProcessor = created;
			}
			return myProcessor;
		}
	}

	private JsonNode discovery() throws IOException {
		JsonNode known = myDiscovery;
		if (known != null) {
			return known;
		}
		try {
			HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
			HttpRequest get = HttpRequest.newBuilder(URI.create(myIssuer + "/.well-known/openid-configuration"))
					.timeout(Duration.ofSeconds(10))
					.GET()
					.build();
			HttpResponse<String> answer = http.send(get, HttpResponse.BodyHandlers.ofString());
			if (answer.statusCode() != 200) {
				throw new IssuerUnreachable("HTTP " + answer.statusCode() + " from the issuer's discovery document");
			}
			myDiscovery = JSON.readTree(answer.body());
			return myDiscovery;
		} catch (InterruptedException e) {
			Thread.currentThread().interrupt();
			throw new IssuerUnreachable("interrupted");
		} catch (IOException e) {
			if (e instanceof IssuerUnreachable) {
				throw e;
			}
			throw new IssuerUnreachable(e.toString());
		}
	}

	private void smartConfiguration(HttpServletResponse theResponse) throws IOException {
		JsonNode discovery;
		try {
			discovery = discovery();
		} catch (IOException e) {
			write(theResponse, 503, outcome("transient", "authorization server unreachable"));
			return;
		}
		ObjectNode config = JSON.createObjectNode();
		config.put("issuer", myIssuer);
		for (String field : new String[] {"jwks_uri", "authorization_endpoint", "token_endpoint",
				"introspection_endpoint", "revocation_endpoint"}) {
			if (discovery.hasNonNull(field)) {
				config.set(field, discovery.get(field));
			}
		}
		array(config, "grant_types_supported", "authorization_code", "client_credentials");
		array(config, "token_endpoint_auth_methods_supported", "private_key_jwt", "client_secret_basic", "none");
		array(config, "token_endpoint_auth_signing_alg_values_supported", "RS384", "ES384");
		array(config, "response_types_supported", "code");
		array(config, "code_challenge_methods_supported", "S256");
		array(config, "scopes_supported", "openid", "fhirUser", "launch", "launch/patient", "patient/*.rs",
				"patient/Task.u", "system/*.rs", "system/*.cud");
		array(config, "capabilities", "launch-ehr", "client-public", "client-confidential-symmetric",
				"client-confidential-asymmetric", "context-ehr-patient", "sso-openid-connect", "permission-v2",
				"permission-patient");
		write(theResponse, 200, config);
	}

	private static void array(ObjectNode theNode, String theName, String... theValues) {
		ArrayNode array = theNode.putArray(theName);
		for (String value : theValues) {
			array.add(value);
		}
	}

	private void refuse(HttpServletResponse theResponse, String theWhy, String theError) throws IOException {
		theResponse.setHeader("WWW-Authenticate", "Bearer realm=\"alliance-fhir-test\", error=\"" + theError + "\"");
		write(theResponse, 401, outcome("login", theWhy));
	}

	static ObjectNode outcome(String theCode, String theText) {
		ObjectNode outcome = JSON.createObjectNode();
		outcome.put("resourceType", "OperationOutcome");
		ObjectNode issue = outcome.putArray("issue").addObject();
		issue.put("severity", "error");
		issue.put("code", theCode);
		issue.put("diagnostics", theText);
		return outcome;
	}

	private static void write(HttpServletResponse theResponse, int theStatus, JsonNode theBody) throws IOException {
		byte[] body = JSON.writeValueAsBytes(theBody);
		theResponse.setStatus(theStatus);
		theResponse.setContentType(theBody.has("resourceType") ? "application/fhir+json" : "application/json");
		theResponse.setCharacterEncoding(StandardCharsets.UTF_8.name());
		theResponse.setContentLength(body.length);
		theResponse.getOutputStream().write(body);
	}

	/** The issuer's discovery document could not be read (not the client's fault). */
	static final class IssuerUnreachable extends IOException {
		IssuerUnreachable(String theMessage) {
			super(theMessage);
		}
	}
}
