package org.alliancefhir.testserver;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.api.server.ResponseDetails;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;
import ca.uhn.fhir.rest.server.exceptions.MethodNotAllowedException;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import org.hl7.fhir.instance.model.api.IBaseBundle;
import org.hl7.fhir.instance.model.api.IBaseConformance;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CapabilityStatement;
import org.hl7.fhir.r4.model.CapabilityStatement.CapabilityStatementRestComponent;
import org.hl7.fhir.r4.model.CapabilityStatement.CapabilityStatementRestResourceComponent;
import org.hl7.fhir.r4.model.CapabilityStatement.ResourceVersionPolicy;
import org.hl7.fhir.r4.model.CapabilityStatement.SystemRestfulInteraction;
import org.hl7.fhir.r4.model.CapabilityStatement.TypeRestfulInteraction;
import org.hl7.fhir.r4.model.Resource;

/**
 * Makes one RestfulServer behave like an EHR with the limits of a {@link ServerProfile},
 * and makes its CapabilityStatement say so. Registered on that server only, so the
 * storage hooks below see only requests (and bundle entries) that came through it.
 * Header-level behaviour (hidden If-None-Exist / If-Match, no ETag) is in {@link ProfileFilter}.
 */
@Interceptor
public class ProfileInterceptor {

	private static final Set<RestOperationTypeEnum> WRITES = Set.of(
			RestOperationTypeEnum.CREATE,
			RestOperationTypeEnum.UPDATE,
			RestOperationTypeEnum.PATCH,
			RestOperationTypeEnum.DELETE);

	private static final Set<TypeRestfulInteraction> WRITE_INTERACTIONS = Set.of(
			TypeRestfulInteraction.CREATE,
			TypeRestfulInteraction.UPDATE,
			TypeRestfulInteraction.PATCH,
			TypeRestfulInteraction.DELETE);

	/** Request user data key: this request is a batch, later bundles are its entries. */
	private static final String BATCH_MARK = ProfileInterceptor.class.getName() + ".batch";

	private final ServerProfile myProfile;

	public ProfileInterceptor(ServerProfile theProfile) {
		myProfile = theProfile;
	}

	/** Plain (non-bundle) requests: refused writes, conditional updates, search limits. */
	@Hook(Pointcut.SERVER_INCOMING_REQUEST_PRE_HANDLED)
	public void incomingRequestPreHandled(RequestDetails theRequest, RestOperationTypeEnum theOperation) {
		String type = theRequest.getResourceName();
		if (myProfile.isRestricted() && WRITES.contains(theOperation) && type != null) {
			refuseRestrictedWrite(type);
		}
		if (!myProfile.honoursConditionals()
				&& theOperation == RestOperationTypeEnum.UPDATE
				&& theRequest.getConditionalUrl(RestOperationTypeEnum.UPDATE) != null) {
			throw new MethodNotAllowedException("Conditional update is not supported by this server (profile "
					+ myProfile.getName() + ")");
		}
		if (myProfile.isRestricted()
				&& (theOperation == RestOperationTypeEnum.SEARCH_TYPE
						|| theOperation == RestOperationTypeEnum.SEARCH_SYSTEM)) {
			restrictSearch(theRequest, type);
		}
	}

	private void restrictSearch(RequestDetails theRequest, String theType) {
		Map<String, String[]> params = theRequest.getParameters();
		for (String name : params.keySet()) {
			String base = name.contains(":") ? name.substring(0, name.indexOf(':')) : name;
			if (base.equals("_sort")) {
				throw new InvalidRequestException("Search parameter _sort is not supported by this server");
			}
			if (base.equals("_lastUpdated") && "QuestionnaireResponse".equals(theType)) {
				throw new InvalidRequestException(
						"Search parameter _lastUpdated is not supported for QuestionnaireResponse by this server");
			}
		}
		String[] count = params.get("_count");
		if (count != null && count.length > 0 && exceedsCap(count[0])) {
			Map<String, String[]> capped = new HashMap<>(params);
			capped.put("_count", new String[] {Integer.toString(ServerProfile.RESTRICTED_MAX_COUNT)});
			theRequest.setParameters(capped);
		}
	}

	private static boolean exceedsCap(String theCount) {
		try {
			return Integer.parseInt(theCount.trim()) > ServerProfile.RESTRICTED_MAX_COUNT;
		} catch (NumberFormatException e) {
			return false; // HAPI itself answers a malformed _count
		}
	}

	private void refuseRestrictedWrite(String theType) {
		if (ServerProfile.RESTRICTED_WRITE_TYPES.contains(theType)) {
			throw new MethodNotAllowedException(
					"Writes of " + theType + " are not allowed on this server (profile " + myProfile.getName() + ")");
		}
	}

	/**
	 * Bundles: refuse the bundle types the profile lacks; ignore conditional headers the
	 * profile ignores; refuse conditional updates and restricted writes. HAPI calls this once
	 * for the whole bundle and, for a batch, once more per entry (as a one-entry transaction
	 * on the same request): refusing there fails that entry only, as an EHR would.
	 */
	@Hook(Pointcut.STORAGE_TRANSACTION_PROCESSING)
	public void transactionProcessing(RequestDetails theRequest, IBaseBundle theBundle) {
		if (!(theBundle instanceof Bundle bundle)) {
			return;
		}
		boolean batchEntry = Boolean.TRUE.equals(theRequest.getUserData().get(BATCH_MARK));
		boolean batch = bundle.getType() == Bundle.BundleType.BATCH;
		if (!batchEntry) {
			if (batch && !myProfile.allowsBatch()) {
				throw new MethodNotAllowedException("Batch bundles are not supported by this server (profile "
						+ myProfile.getName() + ")");
			}
			if (!batch && !myProfile.allowsTransaction()) {
				throw new MethodNotAllowedException(
						"Transaction bundles are not supported by this server (profile " + myProfile.getName() + ")");
			}
			if (batch) {
				theRequest.getUserData().put(BATCH_MARK, Boolean.TRUE);
			}
		}
		for (Bundle.BundleEntryComponent entry : bundle.getEntry()) {
			Bundle.BundleEntryRequestComponent request = entry.getRequest();
			if (!myProfile.honoursConditionals()) {
				request.setIfNoneExist(null);
			}
			if (!myProfile.sendsVersions()) {
				request.setIfMatch(null);
			}
			if (batch) {
				continue; // judged entry by entry in the calls that follow
			}
			if (!myProfile.honoursConditionals()
					&& request.getMethod() == Bundle.HTTPVerb.PUT
					&& request.getUrl() != null
					&& request.getUrl().contains("?")) {
				throw new MethodNotAllowedException("Conditional update is not supported by this server (profile "
						+ myProfile.getName() + "), bundle entry for " + entryType(entry));
			}
			if (myProfile.isRestricted() && isWrite(request.getMethod())) {
				refuseRestrictedWrite(entryType(entry));
			}
		}
	}

	private static boolean isWrite(Bundle.HTTPVerb theVerb) {
		return theVerb == Bundle.HTTPVerb.POST
				|| theVerb == Bundle.HTTPVerb.PUT
				|| theVerb == Bundle.HTTPVerb.PATCH
				|| theVerb == Bundle.HTTPVerb.DELETE;
	}

	private static String entryType(Bundle.BundleEntryComponent theEntry) {
		if (theEntry.getResource() != null && theEntry.getRequest().getMethod() != Bundle.HTTPVerb.PATCH) {
			return theEntry.getResource().fhirType();
		}
		String url = theEntry.getRequest().getUrl();
		if (url == null) {
			return "";
		}
		int end = url.length();
		for (char c : new char[] {'/', '?'}) {
			int at = url.indexOf(c);
			if (at >= 0 && at < end) {
				end = at;
			}
		}
		return url.substring(0, end);
	}

	/** Batch entries reach storage one by one: refusing here fails that entry only. */
	@Hook(Pointcut.STORAGE_PRESTORAGE_RESOURCE_CREATED)
	public void resourceCreated(IBaseResource theResource) {
		if (myProfile.isRestricted()) {
			refuseRestrictedWrite(theResource.fhirType());
		}
	}

	@Hook(Pointcut.STORAGE_PRESTORAGE_RESOURCE_UPDATED)
	public void resourceUpdated(IBaseResource theOld, IBaseResource theNew) {
		if (myProfile.isRestricted()) {
			refuseRestrictedWrite(theNew.fhirType());
		}
	}

	@Hook(Pointcut.STORAGE_PRESTORAGE_RESOURCE_DELETED)
	public void resourceDeleted(IBaseResource theResource) {
		if (myProfile.isRestricted()) {
			refuseRestrictedWrite(theResource.fhirType());
		}
	}

	/** No versions in answers: resources, search/history bundles and bundle entry responses. */
	@Hook(Pointcut.SERVER_OUTGOING_RESPONSE)
	public boolean outgoingResponse(ResponseDetails theResponse) {
		if (!myProfile.sendsVersions()) {
			stripVersions(theResponse.getResponseResource());
		}
		return true;
	}

	private static void stripVersions(IBaseResource theResource) {
		if (!(theResource instanceof Resource resource)) {
			return;
		}
		resource.getMeta().setVersionId(null);
		if (resource.getIdElement().hasVersionIdPart()) {
			resource.setIdElement(resource.getIdElement().toVersionless());
		}
		if (resource instanceof Bundle bundle) {
			for (Bundle.BundleEntryComponent entry : bundle.getEntry()) {
				stripVersions(entry.getResource());
				if (entry.hasResponse()) {
					Bundle.BundleEntryResponseComponent response = entry.getResponse();
					response.setEtag(null);
					if (response.getLocation() != null) {
						response.setLocation(ProfileFilter.withoutHistory(response.getLocation()));
					}
				}
			}
		}
	}

	/** The statement tells the truth about this profile (idempotent: it may be cached). */
	@Hook(Pointcut.SERVER_CAPABILITY_STATEMENT_GENERATED)
	public void capabilityStatementGenerated(IBaseConformance theStatement) {
		if (!(theStatement instanceof CapabilityStatement statement)) {
			return;
		}
		for (CapabilityStatementRestComponent rest : statement.getRest()) {
			rest.getInteraction().removeIf(i -> i.getCode() == SystemRestfulInteraction.TRANSACTION
					&& !myProfile.allowsTransaction());
			rest.getInteraction().removeIf(i -> i.getCode() == SystemRestfulInteraction.BATCH
					&& !myProfile.allowsBatch());
			if (myProfile.allowsBatch()
					&& !myProfile.allowsTransaction()
					&& rest.getInteraction().stream().noneMatch(i -> i.getCode() == SystemRestfulInteraction.BATCH)) {
				rest.addInteraction().setCode(SystemRestfulInteraction.BATCH);
			}
			for (CapabilityStatementRestResourceComponent resource : rest.getResource()) {
				describe(resource);
			}
		}
	}

	private void describe(CapabilityStatementRestResourceComponent theResource) {
		if (!myProfile.honoursConditionals()) {
			theResource.setConditionalCreate(false);
			theResource.setConditionalUpdate(false);
		}
		if (!myProfile.sendsVersions()) {
			theResource.setVersioning(ResourceVersionPolicy.NOVERSION);
			theResource.getInteraction().removeIf(i -> i.getCode() == TypeRestfulInteraction.VREAD);
		}
		if (myProfile.isRestricted()) {
			theResource.getSearchParam().removeIf(p -> "_sort".equals(p.getName()));
			if ("QuestionnaireResponse".equals(theResource.getType())) {
				theResource.getSearchParam().removeIf(p -> "_lastUpdated".equals(p.getName()));
			}
			if (ServerProfile.RESTRICTED_WRITE_TYPES.contains(theResource.getType())) {
				theResource.getInteraction().removeIf(i -> WRITE_INTERACTIONS.contains(i.getCode()));
				theResource.setConditionalCreate(false);
				theResource.setConditionalUpdate(false);
				theResource.setConditionalDelete(CapabilityStatement.ConditionalDeleteStatus.NOTSUPPORTED);
				theResource.setUpdateCreate(false);
			}
		}
	}
}
