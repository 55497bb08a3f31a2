package dev.skiff.compat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;

/**
 * Client security settings from the COMPAT_* environment variables (tests/compat/README.md), added
 * to every client the compat scenario makes. Certificates are PEM files, which the Java client
 * reads directly since KIP-651 (`ssl.truststore.type=PEM`, `ssl.keystore.type=PEM`).
 */
final class Security {
    private Security() {}

    static Properties apply(Properties props) {
        String protocol = System.getenv("COMPAT_SECURITY_PROTOCOL");
        if (protocol == null || protocol.isEmpty()) {
            return props;
        }
        props.put("security.protocol", protocol);
        String ca = System.getenv("COMPAT_SSL_CA_LOCATION");
        if (ca != null && !ca.isEmpty()) {
            props.put("ssl.truststore.type", "PEM");
            props.put("ssl.truststore.location", ca);
        }
        String cert = System.getenv("COMPAT_SSL_CERT_LOCATION");
        String key = System.getenv("COMPAT_SSL_KEY_LOCATION");
        if (cert != null && !cert.isEmpty() && key != null && !key.isEmpty()) {
            // The PEM keystore as two strings: the certificate chain and the (PKCS#8,
            // unencrypted) private key, so the two files need not be concatenated.
            props.put("ssl.keystore.type", "PEM");
            props.put("ssl.keystore.certificate.chain", read(cert));
            props.put("ssl.keystore.key", read(key));
        }
        String mechanism = System.getenv("COMPAT_SASL_MECHANISM");
        if (mechanism != null && !mechanism.isEmpty()) {
            props.put("sasl.mechanism", mechanism);
            String module = mechanism.startsWith("SCRAM-")
                ? "org.apache.kafka.common.security.scram.ScramLoginModule"
                : "org.apache.kafka.common.security.plain.PlainLoginModule";
            props.put("sasl.jaas.config", module + " required username=\"" + quote(System.getenv("COMPAT_SASL_USERNAME"))
                + "\" password=\"" + quote(System.getenv("COMPAT_SASL_PASSWORD")) + "\";");
        }
        return props;
    }

    private static String quote(String s) {
        return s == null ? "" : s.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    private static String read(String path) {
        try {
            return Files.readString(Path.of(path), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw Compat.fatal("cannot read " + path, e);
        }
    }
}
