package org.alliancefhir.testserver;

import java.io.File;

/**
 * Command line / system property options of the test server.
 *
 * <ul>
 *   <li>{@code --port N} (or system property {@code alliance.fhir.port}), default 8080</li>
 *   <li>{@code --host H} (or {@code alliance.fhir.host}), default 127.0.0.1</li>
 *   <li>{@code --db-dir DIR} (or {@code alliance.fhir.db-dir}); absent = in-memory H2</li>
 *   <li>{@code --profile NAME} (or {@code alliance.fhir.profile}): how {@code /fhir} behaves,
 *       default {@code full} (see {@link ServerProfile})</li>
 *   <li>{@code --no-validation}: leave the request-validating interceptor out (every servlet)</li>
 *   <li>{@code --auth-issuer URL} (or {@code alliance.fhir.auth-issuer}): require bearer tokens
 *       from that OpenID provider on every mount ({@link BearerAuthFilter}); off by default</li>
 *   <li>{@code --auth-mount URL} (or {@code alliance.fhir.auth-mount}): one more mount,
 *       {@code /auth/fhir} (profile full, same database), that requires bearer tokens from that
 *       OpenID provider, beside the open mounts; off by default</li>
 * </ul>
 */
public final class ServerOptions {

	private static volatile ServerOptions ourCurrent =
			new ServerOptions(8080, "127.0.0.1", null, ServerProfile.FULL, true, null);

	private final int myPort;
	private final String myHost;
	private final String myDbDir;
	private final ServerProfile myProfile;
	private final boolean myValidation;
	private final String myAuthIssuer;
	private String myAuthMountIssuer;

	private ServerOptions(
			int thePort, String theHost, String theDbDir, ServerProfile theProfile, boolean theValidation,
			String theAuthIssuer) {
		myPort = thePort;
		myHost = theHost;
		myDbDir = theDbDir;
		myProfile = theProfile;
		myValidation = theValidation;
		myAuthIssuer = theAuthIssuer;
	}

	public static ServerOptions parse(String[] theArgs) {
		int port = Integer.parseInt(System.getProperty("alliance.fhir.port", "8080"));
		String host = System.getProperty("alliance.fhir.host", "127.0.0.1");
		String dbDir = System.getProperty("alliance.fhir.db-dir");
		ServerProfile profile = ServerProfile.fromName(System.getProperty("alliance.fhir.profile", "full"));
		boolean validation = true;
		String authIssuer = System.getProperty("alliance.fhir.auth-issuer");
		String authMount = System.getProperty("alliance.fhir.auth-mount");
		for (int i = 0; i < theArgs.length; i++) {
			String arg = theArgs[i];
			switch (arg) {
				case "--port" -> port = Integer.parseInt(requireValue(theArgs, ++i, arg));
				case "--host" -> host = requireValue(theArgs, ++i, arg);
				case "--db-dir" -> dbDir = requireValue(theArgs, ++i, arg);
				case "--profile" -> profile = ServerProfile.fromName(requireValue(theArgs, ++i, arg));
				case "--no-validation" -> validation = false;
				case "--auth-issuer" -> authIssuer = requireValue(theArgs, ++i, arg);
				case "--auth-mount" -> authMount = requireValue(theArgs, ++i, arg);
				default -> throw new IllegalArgumentException("Unknown argument: " + arg
						+ " (usage: [--port N] [--host H] [--db-dir DIR] [--profile NAME] [--no-validation] [--auth-issuer URL] [--auth-mount URL])");
			}
		}
		if (dbDir != null && dbDir.isBlank()) {
			dbDir = null;
		}
		if (authIssuer != null && authIssuer.isBlank()) {
			authIssuer = null;
		}
		ServerOptions options = new ServerOptions(port, host, dbDir, profile, validation, authIssuer);
		options.myAuthMountIssuer = authMount == null || authMount.isBlank() ? null : authMount;
		return options;
	}

	private static String requireValue(String[] theArgs, int theIndex, String theArg) {
		if (theIndex >= theArgs.length) {
			throw new IllegalArgumentException("Missing value for " + theArg);
		}
		return theArgs[theIndex];
	}

	public static ServerOptions current() {
		return ourCurrent;
	}

	static void setCurrent(ServerOptions theOptions) {
		ourCurrent = theOptions;
	}

	public int getPort() {
		return myPort;
	}

	public String getHost() {
		return myHost;
	}

	public String getDbDir() {
		return myDbDir;
	}

	/** How {@code /fhir} behaves; every profile is also mounted at {@code /profiles/<name>/fhir}. */
	public ServerProfile getProfile() {
		return myProfile;
	}

	/** False when {@code --no-validation}: no request-validating interceptor anywhere. */
	public boolean isValidation() {
		return myValidation;
	}

	/** The OpenID provider whose access tokens every request needs; null = no check (default). */
	public String getAuthIssuer() {
		return myAuthIssuer;
	}

	/**
	 * The OpenID provider whose access tokens {@code /auth/fhir} needs; null = no such mount
	 * (default). Lets one JVM serve the open tests and the bearer-checked ones.
	 */
	public String getAuthMountIssuer() {
		return myAuthMountIssuer;
	}

	/** JDBC URL of the H2 database: in-memory unless a db directory was given. */
	public String getJdbcUrl() {
		if (myDbDir == null) {
			// DB_CLOSE_DELAY=-1 keeps the in-memory database alive while the JVM runs
			return "jdbc:h2:mem:alliancefhir;DB_CLOSE_DELAY=-1";
		}
		File dir = new File(myDbDir).getAbsoluteFile();
		if (!dir.isDirectory() && !dir.mkdirs()) {
			throw new IllegalStateException("Cannot create database directory " + dir);
		}
		// DB_CLOSE_ON_EXIT=FALSE: Spring closes the pool itself on shutdown.
		return "jdbc:h2:file:" + new File(dir, "alliancefhir").getPath() + ";DB_CLOSE_ON_EXIT=FALSE";
	}
}
