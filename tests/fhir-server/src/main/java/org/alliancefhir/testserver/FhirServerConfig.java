package org.alliancefhir.testserver;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.ConfigurationException;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.ETagSupportEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

import java.time.Duration;
import java.util.Properties;
import javax.sql.DataSource;

/**
 * Spring wiring of the HAPI FHIR R4 JPA server (no Spring Boot).
 */
@Configuration
@EnableTransactionManagement
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	// in-memory message broker used by batch2 jobs (e.g. delete-expunge)
	SubscriptionChannelConfig.class,
	ThreadPoolFactoryConfig.class,
	RequestValidationConfig.class,
	// FHIR Bulk Data $export on the full profile (its own class)
	BulkExportConfig.class
})
public class FhirServerConfig {

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings retVal = new JpaStorageSettings();
		// Always run searches fresh (tests create and immediately search)
		retVal.setReuseCachedSearchResultsForMillis(null);
		// Client assigned ids of any form (numeric or alphanumeric) on PUT
		retVal.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		// Server assigned ids are UUIDs so they can never collide with client assigned numeric ids
		retVal.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// Deletes / expunge (used for reset between tests)
		retVal.setAllowMultipleDelete(true);
		retVal.setExpungeEnabled(true);
		retVal.setDeleteExpungeEnabled(true);
		retVal.setAllowExternalReferences(true);
		// No subscriptions, no full text indexing, no narratives needed
		retVal.setAdvancedHSearchIndexing(false);
		retVal.setDefaultSearchParamsCanBeOverridden(true);
		return retVal;
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean(destroyMethod = "close")
	public BasicDataSource dataSource() {
		BasicDataSource retVal = new BasicDataSource();
		retVal.setDriverClassName("org.h2.Driver");
		retVal.setUrl(ServerOptions.current().getJdbcUrl());
		retVal.setUsername("sa");
		retVal.setPassword("");
		retVal.setMaxTotal(20);
		retVal.setMaxWait(Duration.ofSeconds(30));
		return retVal;
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource theDataSource,
			ConfigurableListableBeanFactory theBeanFactory,
			FhirContext theFhirContext,
			JpaStorageSettings theStorageSettings) {
		LocalContainerEntityManagerFactoryBean retVal =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(theBeanFactory, theFhirContext, theStorageSettings);
		retVal.setPersistenceUnitName("HAPI_PU");
		try {
			retVal.setDataSource(theDataSource);
		} catch (Exception e) {
			throw new ConfigurationException("Could not set the data source", e);
		}
		retVal.setJpaProperties(hibernateProperties());
		return retVal;
	}

	private static Properties hibernateProperties() {
		Properties props = new Properties();
		props.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		props.put("hibernate.hbm2ddl.auto", "update");
		props.put("hibernate.format_sql", "false");
		props.put("hibernate.show_sql", "false");
		props.put("hibernate.jdbc.batch_size", "20");
		props.put("hibernate.cache.use_query_cache", "false");
		props.put("hibernate.cache.use_second_level_cache", "false");
		props.put("hibernate.cache.use_structured_entries", "false");
		props.put("hibernate.cache.use_minimal_puts", "false");
		props.put("hibernate.search.enabled", "false");
		return props;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
		JpaTransactionManager retVal = new JpaTransactionManager();
		retVal.setEntityManagerFactory(theEntityManagerFactory);
		return retVal;
	}

	@Bean
	public RestfulServerFactory restfulServerFactory(
			IFhirSystemDao<?, ?> theSystemDao,
			ResourceProviderFactory theResourceProviderFactory,
			IJpaSystemProvider theJpaSystemProvider,
			JpaStorageSettings theStorageSettings,
			ISearchParamRegistry theSearchParamRegistry,
			IValidationSupport theValidationSupport,
			DatabaseBackedPagingProvider thePagingProvider,
			@Qualifier("allianceRequestValidatingInterceptor") RequestValidatingInterceptor theRequestValidator) {
		return theProfile -> {
			RestfulServer server = new RestfulServer(theSystemDao.getContext());
			server.registerProviders(theResourceProviderFactory.createProviders());
			server.registerProvider(theJpaSystemProvider);
			server.setServerConformanceProvider(new JpaCapabilityStatementProvider(
					server, theSystemDao, theStorageSettings, theSearchParamRegistry, theValidationSupport));
			server.setDefaultResponseEncoding(EncodingEnum.JSON);
			server.setDefaultPrettyPrint(false);
			server.setPagingProvider(thePagingProvider);
			server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
			if (ServerOptions.current().isValidation() && theProfile.validatesRequests()) {
				server.registerInterceptor(theRequestValidator);
			}
			server.registerInterceptor(new IfMatchPreconditionInterceptor());
			if (ServerOptions.current().getAuthIssuer() != null) {
				server.registerInterceptor(new SmartScopeInterceptor(theSystemDao.getContext()));
			}
			if (theProfile.imitatesLimits()) {
				server.registerInterceptor(new ProfileInterceptor(theProfile));
				if (!theProfile.sendsVersions()) {
					server.setETagSupport(ETagSupportEnum.DISABLED);
				}
			}
			return server;
		};
	}

	/** One RestfulServer per mounted profile, all over the same DAOs and database. */
	@FunctionalInterface
	public interface RestfulServerFactory {
		RestfulServer create(ServerProfile theProfile);
	}
}
