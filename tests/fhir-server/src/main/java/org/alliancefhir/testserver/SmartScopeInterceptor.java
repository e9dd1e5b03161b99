package org.alliancefhir.testserver;

import ca.uhn.fhir.context.BaseRuntimeChildDefinition;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.RuntimeResourceDefinition;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.api.server.ResponseDetails;
import ca.uhn.fhir.rest.server.exceptions.ForbiddenOperationException;
import ca.uhn.fhir.rest.server.servlet.ServletRequestDetails;
import com.nimbusds.jwt.JWTClaimsSet;
import java.text.ParseException;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.hl7.fhir.instance.model.api.IBase;
import org.hl7.fhir.instance.model.api.IBaseBundle;
import org.hl7.fhir.instance.model.api.IBaseReference;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;

/**
 * SMART scopes of the bearer token that {@link BearerAuthFilter} verified: each interaction
 * needs a granted scope {@code (patient|user|system)/(Type|*).(cruds letters | read | write | *)}
 * naming its type and permission (read=r, search=s, create=c, update/patch=u, delete=d;
 * operations such as {@code $expunge} need {@code system/*.cruds}), else 403.
 *
 * <p>A token in patient context (a {@code patient} claim, or any {@code patient/} scope) may
 * touch only that patient's data: {@code Patient/<id>} itself and resources whose
 * {@code subject}, {@code patient} or {@code for} reference it. Resources that name no patient
 * (Questionnaire, CodeSystem, Practitioner) are not patient data and pass. A search whose
 * results hold another patient's resource is refused whole.
 */
@Interceptor
public class SmartScopeInterceptor {

	private static final String[] PATIENT_LINKS = {"subject", "patient", "for"};
	private static final Set<RestOperationTypeEnum> UNCHECKED =
			Set.of(RestOperationTypeEnum.METADATA, RestOperationTypeEnum.GET_PAGE);

	private final FhirContext myContext;

	public SmartScopeInterceptor(FhirContext theContext) {
		myContext = theContext;
	}

	@Hook(Pointcut.SERVER_INCOMING_REQUEST_PRE_HANDLED)
	public void incoming(RequestDetails theRequest, RestOperationTypeEnum theOperation) {
		Token token = Token.of(theRequest);
		if (token == null || UNCHECKED.contains(theOperation)) {
			return;
		}
		switch (theOperation) {
			case TRANSACTION, BATCH -> {
				// entries are checked one by one in STORAGE_TRANSACTION_PROCESSING
			}
			case READ, VREAD -> token.require(theRequest.getResourceName(), 'r');
			case SEARCH_TYPE, HISTORY_INSTANCE, HISTORY_TYPE -> token.require(theRequest.getResourceName(), 's');
			case CREATE -> token.require(theRequest.getResourceName(), 'c');
			case UPDATE, PATCH -> token.require(theRequest.getResourceName(), 'u');
			case DELETE -> token.require(theRequest.getResourceName(), 'd');
			default -> token.requireAll();
		}
	}

	@Hook(Pointcut.STORAGE_TRANSACTION_PROCESSING)
	public void transaction(RequestDetails theRequest, IBaseBundle theBundle) {
		Token token = Token.of(theRequest);
		if (token == null || !(theBundle instanceof Bundle bundle)) {
			return;
		}
		for (Bundle.BundleEntryComponent entry : bundle.getEntry()) {
			Bundle.HTTPVerb verb = entry.getRequest().getMethod();
			String url = entry.getRequest().getUrl() == null ? "" : entry.getRequest().getUrl();
			String type = url.split("[/?]", 2)[0];
			if (verb == null) {
				continue;
			}
			switch (verb) {
				case GET, HEAD -> token.require(type, url.contains("/") && !url.contains("?") ? 'r' : 's');
				case POST -> token.require(type, 'c');
				case PUT, PATCH -> token.require(type, 'u');
				case DELETE -> token.require(type, 'd');
				default -> token.requireAll();
			}
		}
	}

	@Hook(Pointcut.STORAGE_PRESTORAGE_RESOURCE_CREATED)
	public void created(RequestDetails theRequest, IBaseResource theResource) {
		Token token = Token.of(theRequest);
		if (token != null) {
			requireOwn(token, theResource);
		}
	}

	@Hook(Pointcut.STORAGE_PRESTORAGE_RESOURCE_UPDATED)
	public void updated(RequestDetails theRequest, IBaseResource theOld, IBaseResource theNew) {
		Token token = Token.of(theRequest);
		if (token != null) {
			requireOwn(token, theOld);
			requireOwn(token, theNew);
		}
	}

	@Hook(Pointcut.SERVER_OUTGOING_RESPONSE)
	public boolean outgoing(RequestDetails theRequest, ResponseDetails theResponse) {
		Token token = Token.of(theRequest);
		if (token == null || theResponse.getResponseResource() == null) {
			return true;
		}
		IBaseResource resource = theResponse.getResponseResource();
		if (resource instanceof Bundle bundle) {
			for (Bundle.BundleEntryComponent entry : bundle.getEntry()) {
				if (entry.getResource() != null) {
					requireOwn(token, entry.getResource());
				}
			}
		} else {
			requireOwn(token, resource);
		}
		return true;
	}

	private void requireOwn(Token theToken, IBaseResource theResource) {
		if (!theToken.patientContext() || theResource == null) {
			return;
		}
		String patient = theToken.patient();
		if (patient == null) {
			throw new ForbiddenOperationException("patient scopes without a patient in context");
		}
		RuntimeResourceDefinition definition = myContext.getResourceDefinition(theResource);
		if ("Patient".equals(definition.getName())) {
			if (!patient.equals(theResource.getIdElement().getIdPart())) {
				throw new ForbiddenOperationException("another patient's record is outside this token's context");
			}
			return;
		}
		if ("OperationOutcome".equals(definition.getName())) {
			return;
		}
		for (String link : PATIENT_LINKS) {
			BaseRuntimeChildDefinition child = definition.getChildByName(link);
			if (child == null) {
				continue;
			}
			for (IBase value : child.getAccessor().getValues(theResource)) {
				if (value instanceof IBaseReference reference
						&& reference.getReferenceElement() != null
						&& reference.getReferenceElement().hasIdPart()) {
					String type = reference.getReferenceElement().getResourceType();
					String id = reference.getReferenceElement().getIdPart();
					if ((type == null || "Patient".equals(type)) && !patient.equals(id)) {
						throw new ForbiddenOperationException(
								definition.getName() + " of another patient is outside this token's context");
					}
				}
			}
		}
	}

	/** The scopes and patient of one verified access token. */
	static final class Token {
		private final List<String[]> myScopes = new ArrayList<>();
		private final String myPatient;
		private final boolean myPatientScopes;

		private Token(JWTClaimsSet theClaims) {
			String patient = null;
			String scope = "";
			try {
				patient = theClaims.getStringClaim("patient");
				scope = theClaims.getStringClaim("scope");
			} catch (ParseException e) {
				throw new ForbiddenOperationException("token claims are not strings");
			}
			myPatient = patient;
			boolean patientScopes = false;
			for (String one : scope == null ? new String[0] : scope.split(" ")) {
				int slash = one.indexOf('/');
				int dot = one.lastIndexOf('.');
				if (slash <= 0 || dot < slash) {
					continue; // openid, launch, fhirUser, ...
				}
				String context = one.substring(0, slash);
				String type = one.substring(slash + 1, dot);
				String permission = one.substring(dot + 1);
				int query = permission.indexOf('?');
				if (query >= 0) {
					permission = permission.substring(0, query);
				}
				permission = switch (permission) {
					case "read" -> "rs";
					case "write" -> "cud";
					case "*" -> "cruds";
					default -> permission;
				};
				patientScopes |= "patient".equals(context);
				myScopes.add(new String[] {context, type, permission});
			}
			myPatientScopes = patientScopes;
		}

		static Token of(RequestDetails theRequest) {
			if (!(theRequest instanceof ServletRequestDetails servlet)) {
				return null;
			}
			Object claims = servlet.getServletRequest().getAttribute(BearerAuthFilter.CLAIMS);
			return claims instanceof JWTClaimsSet set ? new Token(set) : null;
		}

		boolean patientContext() {
			return myPatient != null || myPatientScopes;
		}

		String patient() {
			return myPatient;
		}

		void require(String theType, char thePermission) {
			for (String[] scope : myScopes) {
				if (("*".equals(scope[1]) || scope[1].equals(theType)) && scope[2].indexOf(thePermission) >= 0) {
					return;
				}
			}
			throw new ForbiddenOperationException("the token's scopes do not allow '" + thePermission + "' on "
					+ (theType == null || theType.isEmpty() ? "the system" : theType));
		}

		void requireAll() {
			for (String[] scope : myScopes) {
				if ("system".equals(scope[0]) && "*".equals(scope[1])
						&& "cruds".chars().allMatch(c -> scope[2].indexOf(c) >= 0)) {
					return;
				}
			}
			throw new ForbiddenOperationException("this operation needs system/*.cruds");
		}
	}
}
