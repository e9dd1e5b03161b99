package org.alliancefhir.testserver;

import java.util.Arrays;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * EHR-like behaviours of the test server. Real EHR FHIR APIs support far less than HAPI;
 * each profile imitates one common limitation so clients can be tested against it.
 * {@link #FULL} is HAPI as configured in {@link FhirServerConfig}, with nothing changed.
 */
public enum ServerProfile {
	/** Today's server: everything HAPI supports. */
	FULL("full"),
	/** Transaction bundles refused (405), batch bundles allowed. */
	BATCH_ONLY("batch-only"),
	/** Neither transaction nor batch bundles (405). */
	SINGLE_ONLY("single-only"),
	/** If-None-Exist ignored (duplicates possible), conditional update refused (405). */
	NO_CONDITIONAL("no-conditional"),
	/** No ETag header, no meta.versionId, If-Match ignored. */
	NO_ETAG("no-etag"),
	/** No writes of some types, _count capped, no _sort, no _lastUpdated on QuestionnaireResponse. */
	RESTRICTED("restricted"),
	/** {@link #FULL} without the request-validating interceptor: a common production set-up. */
	NO_VALIDATION("no-validation");

	/** Resource types the restricted profile refuses to create, update, patch or delete. */
	public static final Set<String> RESTRICTED_WRITE_TYPES = Set.of("CodeSystem", "Questionnaire", "Flag");

	/** Largest page the restricted profile serves, whatever {@code _count} asks for. */
	public static final int RESTRICTED_MAX_COUNT = 50;

	private final String myName;

	ServerProfile(String theName) {
		myName = theName;
	}

	/** The name used on the command line and in {@code /profiles/<name>/fhir}. */
	public String getName() {
		return myName;
	}

	public boolean allowsTransaction() {
		return this != BATCH_ONLY && this != SINGLE_ONLY;
	}

	public boolean allowsBatch() {
		return this != SINGLE_ONLY;
	}

	public boolean honoursConditionals() {
		return this != NO_CONDITIONAL;
	}

	public boolean sendsVersions() {
		return this != NO_ETAG;
	}

	public boolean isRestricted() {
		return this == RESTRICTED;
	}

	/** False for {@link #NO_VALIDATION}: requests are stored without validation. */
	public boolean validatesRequests() {
		return this != NO_VALIDATION;
	}

	/** Whether the profile imitates a limitation (needs ProfileInterceptor / ProfileFilter). */
	public boolean imitatesLimits() {
		return this != FULL && this != NO_VALIDATION;
	}

	/** Comma separated names of all profiles, for messages. */
	public static String names() {
		return Arrays.stream(values()).map(ServerProfile::getName).collect(Collectors.joining(", "));
	}

	public static ServerProfile fromName(String theName) {
		for (ServerProfile profile : values()) {
			if (profile.myName.equals(theName)) {
				return profile;
			}
		}
		throw new IllegalArgumentException("Unknown profile: " + theName + " (one of: " + names() + ")");
	}
}
