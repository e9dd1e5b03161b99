package org.alliancefhir.testserver;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.rest.server.RestfulServer;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * FHIR Bulk Data export ({@code $export}, system and Patient level, with {@code _type},
 * {@code _since}, {@code _typeFilter}) on the {@code full} profile's servers only: the
 * EHR-like profiles stay without it, as most EHRs are, and their CapabilityStatements say
 * so.
 *
 * <p>Kept apart from {@link FhirServerConfig} on purpose (one {@code @Import} line there):
 * a bean post-processor switches the storage settings on, shortens the batch2 maintenance
 * interval (HAPI's default of one minute would make every export wait for the next pass
 * to write its manifest) and wraps the {@link FhirServerConfig.RestfulServerFactory} so the
 * {@code full} servers get HAPI's {@link BulkDataExportProvider}.
 *
 * <p>Job reuse is off: an identical kick-off within the reuse window would otherwise be
 * answered with an earlier job's (stale) files, and a client that deleted that job would
 * get a cancelled one.
 */
@Configuration
public class BulkExportConfig {

	/** How often batch2 job maintenance runs (it writes the export manifest). */
	static final long MAINTENANCE_MILLIS = 1000;

	@Bean
	public static BeanPostProcessor allianceBulkExportSetup(ObjectProvider<BulkDataExportProvider> theProvider) {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessAfterInitialization(Object theBean, String theName) {
				if (theBean instanceof JpaStorageSettings settings) {
					settings.setEnableTaskBulkExportJobExecution(true);
					settings.setEnableBulkExportJobReuse(false);
					settings.setJobFastTrackingEnabled(true);
				} else if (theBean instanceof JobMaintenanceServiceImpl maintenance) {
					maintenance.setScheduledJobFrequencyMillis(MAINTENANCE_MILLIS);
				} else if (theBean instanceof FhirServerConfig.RestfulServerFactory factory) {
					return withExport(factory, theProvider);
				}
				return theBean;
			}
		};
	}

	private static FhirServerConfig.RestfulServerFactory withExport(
			FhirServerConfig.RestfulServerFactory theFactory, ObjectProvider<BulkDataExportProvider> theProvider) {
		return theProfile -> {
			RestfulServer server = theFactory.create(theProfile);
			if (theProfile == ServerProfile.FULL) {
				server.registerProvider(theProvider.getObject());
			}
			return server;
		};
	}
}
