package org.alliancefhir.testserver;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.validation.FhirValidator;
import jakarta.servlet.DispatcherType;
import jakarta.servlet.http.HttpServlet;
import java.util.EnumSet;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import org.eclipse.jetty.ee10.servlet.FilterHolder;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.HttpConfiguration;
import org.eclipse.jetty.server.HttpConnectionFactory;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * Entry point of the alliance-fhir HAPI FHIR R4 JPA test server.
 *
 * <pre>
 *   java -cp ... org.alliancefhir.testserver.Main [--port N] [--host H] [--db-dir DIR]
 *        [--profile NAME] [--no-validation] [--auth-issuer URL] [--auth-mount URL]
 * </pre>
 *
 * Without {@code --db-dir} the data lives in an in-memory H2 database (lost on exit);
 * with it, an H2 file database under DIR is used, so data survives a restart.
 * The FHIR base is always {@code http://HOST:PORT/fhir}, behaving as {@code --profile};
 * every profile is also mounted at {@code /profiles/<name>/fhir} over the same database,
 * so one JVM (one slow start) serves tests of all of them. With {@code --auth-mount URL},
 * {@code /auth/fhir} (profile full, same database) also checks bearer tokens from that issuer.
 */
public final class Main {

	private static final Logger ourLog = LoggerFactory.getLogger(Main.class);

	private Main() {}

	public static void main(String[] theArgs) throws Exception {
		long start = System.currentTimeMillis();
		ServerOptions options = ServerOptions.parse(theArgs);
		ServerOptions.setCurrent(options);
		ourLog.info(
				"Starting alliance-fhir test server: port={} host={} database={} profile={} validation={} auth-issuer={}",
				options.getPort(),
				options.getHost(),
				options.getJdbcUrl(),
				options.getProfile().getName(),
				options.isValidation(),
				options.getAuthIssuer() == null ? "none" : options.getAuthIssuer());

		AnnotationConfigApplicationContext springContext = new AnnotationConfigApplicationContext();
		springContext.register(FhirServerConfig.class);
		springContext.refresh();
		springContext.registerShutdownHook();

		if (options.isValidation()) {
			warmUpValidator(springContext);
		}

		FhirServerConfig.RestfulServerFactory servers = springContext.getBean(FhirServerConfig.RestfulServerFactory.class);

		QueuedThreadPool threadPool = new QueuedThreadPool(64, 4);
		threadPool.setName("fhir-http");
		Server jetty = new Server(threadPool);
		HttpConfiguration httpConfig = new HttpConfiguration();
		httpConfig.setSendServerVersion(false);
		httpConfig.setRequestHeaderSize(64 * 1024);
		ServerConnector connector = new ServerConnector(jetty, new HttpConnectionFactory(httpConfig));
		connector.setHost(options.getHost());
		connector.setPort(options.getPort());
		jetty.addConnector(connector);

		ServletContextHandler contextHandler = new ServletContextHandler();
		contextHandler.setContextPath("/");
		mount(contextHandler, "fhir", "/fhir", servers.create(options.getProfile()), options.getProfile());
		for (ServerProfile profile : ServerProfile.values()) {
			mount(contextHandler, "profile-" + profile.getName(), "/profiles/" + profile.getName() + "/fhir",
					servers.create(profile), profile);
		}
		if (options.getAuthMountIssuer() != null) {
			mountAuth(contextHandler, servers, springContext.getBean(FhirContext.class), options);
		}
		jetty.setHandler(contextHandler);
		jetty.setStopAtShutdown(true);
		jetty.setStopTimeout(5000);

		Runtime.getRuntime().addShutdownHook(new Thread(() -> ourLog.info("Shutting down alliance-fhir test server")));

		jetty.start();
		ourLog.info(
				"alliance-fhir test server READY at http://{}:{}/fhir (startup {} ms)",
				"0.0.0.0".equals(options.getHost()) ? "127.0.0.1" : options.getHost(),
				options.getPort(),
				System.currentTimeMillis() - start);
		jetty.join();
	}

	private static void mount(
			ServletContextHandler theHandler, String theName, String thePath, HttpServlet theServlet,
			ServerProfile theProfile) {
		ServletHolder holder = new ServletHolder(theName, theServlet);
		holder.setInitOrder(1);
		theHandler.addServlet(holder, thePath + "/*");
		String issuer = ServerOptions.current().getAuthIssuer();
		if (issuer != null) {
			theHandler.addFilter(
					new FilterHolder(new BearerAuthFilter(issuer, ServerOptions.current().getPort(), thePath)),
					thePath + "/*",
					EnumSet.of(DispatcherType.REQUEST));
		}
		if (theProfile.imitatesLimits()) {
			theHandler.addFilter(
					new FilterHolder(new ProfileFilter(theProfile)), thePath + "/*", EnumSet.of(DispatcherType.REQUEST));
		}
	}

	/**
	 * {@code /auth/fhir}: profile full over the same database, behind {@link BearerAuthFilter}
	 * and {@link SmartScopeInterceptor} for the {@code --auth-mount} issuer, so the SMART tests
	 * need no second server.
	 */
	private static void mountAuth(
			ServletContextHandler theHandler, FhirServerConfig.RestfulServerFactory theServers,
			FhirContext theContext, ServerOptions theOptions) {
		String path = "/auth/fhir";
		RestfulServer server = theServers.create(ServerProfile.FULL);
		if (theOptions.getAuthIssuer() == null) { // else the factory registered one already
			server.registerInterceptor(new SmartScopeInterceptor(theContext));
		}
		ServletHolder holder = new ServletHolder("auth", server);
		holder.setInitOrder(1);
		theHandler.addServlet(holder, path + "/*");
		theHandler.addFilter(
				new FilterHolder(new BearerAuthFilter(theOptions.getAuthMountIssuer(), theOptions.getPort(), path)),
				path + "/*",
				EnumSet.of(DispatcherType.REQUEST));
	}

	/**
	 * The first validation loads and snapshots the core R4 definitions (several seconds);
	 * do it before accepting requests so the first client request is not slow.
	 */
	private static void warmUpValidator(AnnotationConfigApplicationContext theContext) {
		long start = System.currentTimeMillis();
		try {
			FhirContext ctx = theContext.getBean(FhirContext.class);
			RequestValidatingInterceptor interceptor =
					theContext.getBean("allianceRequestValidatingInterceptor", RequestValidatingInterceptor.class);
			FhirValidator validator = ctx.newValidator();
			interceptor.getValidatorModules().forEach(validator::registerValidatorModule);
			String sample = "{\"resourceType\":\"Questionnaire\",\"status\":\"active\",\"item\":[{\"linkId\":\"a\","
					+ "\"type\":\"choice\",\"code\":[{\"system\":\"http://example.org/warmup\",\"code\":\"x\"}],"
					+ "\"answerOption\":[{\"valueCoding\":{\"system\":\"http://loinc.org\",\"code\":\"LA6568-5\"}}]}]}";
			validator.validateWithResult(sample);
			for (String other : new String[] {
				"{\"resourceType\":\"Patient\",\"gender\":\"female\"}",
				"{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"}}",
				"{\"resourceType\":\"Bundle\",\"type\":\"transaction\"}"
			}) {
				validator.validateWithResult(other);
			}
			ourLog.info("Validator warm-up done in {} ms", System.currentTimeMillis() - start);
		} catch (RuntimeException e) {
			ourLog.warn("Validator warm-up failed (continuing): {}", e.toString());
		}
	}
}
