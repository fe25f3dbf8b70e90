/*
 * ceiling.c - bench client: libcurl used directly, one reused easy handle,
 * the body collected and nothing else done with it.  No client built on
 * libcurl can beat this; it is the 1.0 of the ratios.
 *
 * It sends the very request lua-oauth2 sends (the same form, Accept and
 * User-Agent; the form's Content-Type is libcurl's default), and drives
 * libcurl the cheapest way we know, as the C core does: the URL parsed
 * once into a CURLU handle (given CURLOPT_URL, libcurl parses it again on
 * every transfer), and the proxy settled once instead of libcurl reading
 * the environment on every transfer.  It sets no timeouts.
 *
 * With CEILING_ONESHOT=1 in the environment it is the ceiling of one-shot
 * calls instead: a new easy handle per request (curl_easy_init, options
 * with CURLOPT_URL as a one-shot caller gives it, perform, cleanup), so a
 * new connection each time, as oauth2.token(opts) opens and closes one.
 * Usage: ceiling URL N [CA_FILE]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

static char body[65536];
static size_t body_len;

static size_t collect(char *data, size_t size, size_t nmemb, void *userdata)
{
    size_t n = size * nmemb;
    (void)userdata;
    if (body_len + n > sizeof body)
        return 0;
    memcpy(body + body_len, data, n);
    body_len += n;
    return n;
}

/* The options of one request on a handle. */
static void set_up(CURL *easy, CURLU *url, struct curl_slist *headers, const char *form,
                   const char *ca_file)
{
    if (url != NULL)
        curl_easy_setopt(easy, CURLOPT_CURLU, url);
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_NOPROXY, "");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (ca_file != NULL)
        curl_easy_setopt(easy, CURLOPT_CAINFO, ca_file);
}

int main(int argc, char **argv)
{
    const char *form = "grant_type=client_credentials&client_id=bench-id&client_secret=bench-secret";
    struct curl_slist *headers = NULL;
    CURLU *url;
    struct timespec start, end;
    long n, i, status = 0;
    CURL *easy;
    const char *ca_file = argc > 3 ? argv[3] : NULL;
    int oneshot = getenv("CEILING_ONESHOT") != NULL;
    if (argc < 3)
        return 2;
    n = atol(argv[2]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    easy = curl_easy_init();
    url = curl_url();
    if (url == NULL || curl_url_set(url, CURLUPART_URL, argv[1], 0) != CURLUE_OK)
        return 2;
    headers = curl_slist_append(headers, "Accept: application/json, application/problem+json");
    headers = curl_slist_append(headers, "User-Agent: lua-oauth2/0.1.0");
    set_up(easy, url, headers, form, ca_file);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (i = 0; i < n; i++) {
        body_len = 0;
        if (oneshot) {
            curl_easy_cleanup(easy);
            easy = curl_easy_init();
            set_up(easy, NULL, headers, form, ca_file);
            curl_easy_setopt(easy, CURLOPT_URL, argv[1]);
        }
        if (curl_easy_perform(easy) != CURLE_OK)
            return 1;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200 || body_len == 0)
            return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("%.6f %ld\n", (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9, n);
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    curl_url_cleanup(url);
    curl_global_cleanup();
    return 0;
}
