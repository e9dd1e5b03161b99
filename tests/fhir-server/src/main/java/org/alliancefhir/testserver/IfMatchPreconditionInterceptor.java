package org.alliancefhir.testserver;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import ca.uhn.fhir.rest.server.exceptions.PreconditionFailedException;
import ca.uhn.fhir.rest.server.exceptions.ResourceVersionConflictException;

/**
 * HAPI's JPA layer answers an update whose {@code If-Match} version is not the current
 * version with 409 Conflict (HAPI-0989). The FHIR specification (RESTful API, "Managing
 * resource contention") asks for 412 Precondition Failed, which is what clients of this
 * project expect from other servers: translate exactly that case.
 */
@Interceptor
public class IfMatchPreconditionInterceptor {

	private static final String NOT_CURRENT_VERSION = "HAPI-0989";

	@Hook(Pointcut.SERVER_PRE_PROCESS_OUTGOING_EXCEPTION)
	public BaseServerResponseException preProcessOutgoingException(
			RequestDetails theRequestDetails, Throwable theException) {
		if (theException instanceof ResourceVersionConflictException conflict
				&& conflict.getMessage() != null
				&& conflict.getMessage().contains(NOT_CURRENT_VERSION)) {
			PreconditionFailedException retVal =
					new PreconditionFailedException(conflict.getMessage(), conflict.getOperationOutcome());
			return retVal;
		}
		return null;
	}
}
