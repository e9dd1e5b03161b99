package org.alliancefhir.testserver;

import jakarta.servlet.Filter;
import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.ServletRequest;
import jakarta.servlet.ServletResponse;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletRequestWrapper;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpServletResponseWrapper;
import java.io.IOException;
import java.util.Collections;
import java.util.Enumeration;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The header side of a {@link ServerProfile}, in front of one RestfulServer servlet: request
 * headers the profile ignores are hidden from HAPI (so HAPI never acts on them), and version
 * headers are dropped from answers. Body-level behaviour is in {@link ProfileInterceptor}.
 */
public class ProfileFilter implements Filter {

	private static final Pattern HISTORY = Pattern.compile("/_history/[^/?]*");

	private final ServerProfile myProfile;
	private final Set<String> myHiddenHeaders = new HashSet<>();

	public ProfileFilter(ServerProfile theProfile) {
		myProfile = theProfile;
		if (!theProfile.honoursConditionals()) {
			myHiddenHeaders.add("if-none-exist");
		}
		if (!theProfile.sendsVersions()) {
			myHiddenHeaders.add("if-match");
		}
	}

	/** {@code Patient/1/_history/2} -> {@code Patient/1}: a location that names no version. */
	static String withoutHistory(String theLocation) {
		return HISTORY.matcher(theLocation).replaceAll("");
	}

	@Override
	public void doFilter(ServletRequest theRequest, ServletResponse theResponse, FilterChain theChain)
			throws IOException, ServletException {
		ServletRequest request = theRequest;
		ServletResponse response = theResponse;
		if (!myHiddenHeaders.isEmpty() && theRequest instanceof HttpServletRequest http) {
			request = new HiddenHeaders(http, myHiddenHeaders);
		}
		if (!myProfile.sendsVersions() && theResponse instanceof HttpServletResponse http) {
			response = new NoVersionHeaders(http);
		}
		theChain.doFilter(request, response);
	}

	private static final class HiddenHeaders extends HttpServletRequestWrapper {
		private final Set<String> myHidden;

		HiddenHeaders(HttpServletRequest theRequest, Set<String> theHidden) {
			super(theRequest);
			myHidden = theHidden;
		}

		private boolean hidden(String theName) {
			return theName != null && myHidden.contains(theName.toLowerCase(Locale.ROOT));
		}

		@Override
		public String getHeader(String theName) {
			return hidden(theName) ? null : super.getHeader(theName);
		}

		@Override
		public Enumeration<String> getHeaders(String theName) {
			return hidden(theName) ? Collections.emptyEnumeration() : super.getHeaders(theName);
		}

		@Override
		public Enumeration<String> getHeaderNames() {
			List<String> names = Collections.list(super.getHeaderNames());
			names.removeIf(this::hidden);
			return Collections.enumeration(names);
		}
	}

	private static final class NoVersionHeaders extends HttpServletResponseWrapper {
		NoVersionHeaders(HttpServletResponse theResponse) {
			super(theResponse);
		}

		private static String rewrite(String theName, String theValue) {
			if (theName == null || theValue == null) {
				return theValue;
			}
			String name = theName.toLowerCase(Locale.ROOT);
			if (name.equals("etag")) {
				return null;
			}
			if (name.equals("location") || name.equals("content-location")) {
				return withoutHistory(theValue);
			}
			return theValue;
		}

		@Override
		public void setHeader(String theName, String theValue) {
			String value = rewrite(theName, theValue);
			if (value != null) {
				super.setHeader(theName, value);
			}
		}

		@Override
		public void addHeader(String theName, String theValue) {
			String value = rewrite(theName, theValue);
			if (value != null) {
				super.addHeader(theName, value);
			}
		}
	}
}
