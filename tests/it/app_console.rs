//! The web console in a real browser: a new user signs in, renders the bundled invoice, watches
//! the progress bar reach 100 % and downloads a correct PDF.

use std::time::Duration;

use fantoccini::Locator;

use crate::support::app::{AppOptions, Instance, ROOT_EMAIL, ROOT_PASSWORD, pdf_text};
use crate::support::browser::Browser;
use crate::support::wait_for;

#[tokio::test]
async fn sign_in_render_the_example_and_download_the_pdf() {
    let app = Instance::start(AppOptions::default()).await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &app.data_dir).await;
    let c = &browser.client;

    c.goto(&format!("{}/", app.url)).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/login",
        "signed-out visitors land on the sign-in page"
    );
    c.find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(ROOT_EMAIL)
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(ROOT_PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("#login-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("table.list"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/templates");

    c.find(Locator::Css("a[href='/render?template=invoice']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let data = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("textarea[name=data]"))
        .await
        .unwrap();
    let prefilled = data.prop("value").await.unwrap().unwrap_or_default();
    assert!(
        prefilled.contains("Northwind Traders GmbH"),
        "the sample data is filled in: {prefilled}"
    );
    c.find(Locator::Css("#render-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    let download = c
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#download"))
        .await
        .unwrap();
    let bar = c
        .find(Locator::Css("#render-status .progress"))
        .await
        .unwrap();
    assert_eq!(
        bar.attr("data-progress").await.unwrap().as_deref(),
        Some("100")
    );
    let label = c
        .find(Locator::Css("#render-status .progress .label"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(label.contains("100%"), "{label}");
    download.click().await.unwrap();

    let pdf = wait_for("the PDF download", Duration::from_secs(30), || async {
        let entries = std::fs::read_dir(downloads.path()).ok()?;
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pdf"))
            .and_then(|p| std::fs::read(p).ok())
            .filter(|b| {
                b.starts_with(b"%PDF") && (b.ends_with(b"%%EOF\n") || b.ends_with(b"%%EOF"))
            })
    })
    .await;
    let text = pdf_text(&pdf);
    assert!(
        text.contains("Northwind Traders GmbH") && text.contains("EUR 3,216.60"),
        "{text}"
    );
    c.clone().close().await.unwrap();
}
