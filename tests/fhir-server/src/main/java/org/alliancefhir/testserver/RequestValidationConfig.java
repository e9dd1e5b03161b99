package org.alliancefhir.testserver;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.config.JpaConfig;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.r5.utils.validation.constants.BestPracticeWarningLevel;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Request validation against the base FHIR R4 definitions only, fully offline:
 * no package downloads, no remote terminology server, nothing read from the database.
 * Requests producing ERROR level issues are rejected (HTTP 422 + OperationOutcome);
 * unknown extensions and codes from unknown code systems are at most warnings.
 */
@Configuration
public class RequestValidationConfig {

	@Bean(name = "allianceRequestValidatingInterceptor")
	public RequestValidatingInterceptor allianceRequestValidatingInterceptor(
			FhirContext theFhirContext,
			@Qualifier(JpaConfig.DEFAULT_PROFILE_VALIDATION_SUPPORT) DefaultProfileValidationSupport theDefaultProfiles) {
		// Deliberately not a Spring bean of its own: HAPI's DAOs look up the single
		// IInstanceValidatorModule bean (used by $validate) by type.

		UnknownCodeSystemWarningValidationSupport unknownCodeSystems =
				new UnknownCodeSystemWarningValidationSupport(theFhirContext);
		unknownCodeSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);

		ValidationSupportChain chain = new ValidationSupportChain(
				theDefaultProfiles,
				new SnapshotGeneratingValidationSupport(theFhirContext),
				new InMemoryTerminologyServerValidationSupport(theFhirContext),
				new CommonCodeSystemsTerminologyService(theFhirContext),
				unknownCodeSystems);

		FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
		instanceValidator.setAnyExtensionsAllowed(true);
		instanceValidator.setErrorForUnknownProfiles(false);
		instanceValidator.setNoTerminologyChecks(false);
		instanceValidator.setBestPracticeWarningLevel(BestPracticeWarningLevel.Ignore);

		RequestValidatingInterceptor retVal = new RequestValidatingInterceptor();
		retVal.addValidatorModule(instanceValidator);
		retVal.setFailOnSeverity(ResultSeverityEnum.ERROR);
		// The validation outcome headers can be huge: never add them to responses
		retVal.setAddResponseHeaderOnSeverity(null);
		retVal.setAddResponseOutcomeHeaderOnSeverity(null);
		// A crash inside the validator must not hide real errors
		retVal.setIgnoreValidatorExceptions(false);
		return retVal;
	}
}
